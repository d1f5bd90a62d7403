//! `netpol-agent`: the node agent (`run`) and its tools (`check`, `explain`,
//! `stats`, `flows`, `monitor`, `status`, `uninstall`, `version`,
//! `completion`).
//!
//! Exit codes (also in `--help`; scripts may branch on them):
//! - 0: success; for `explain`, the packet is allowed.
//! - 1: a runtime error (kernel, interfaces, bpffs, ...).
//! - 2: an invalid or unreadable policy (each error printed on its own line as
//!   `file:line:column: field: message`), a policy too big for the maps, a
//!   lockout `run` refuses (for `check`: whatever `run` would refuse), or
//!   invalid usage (clap's own usage errors are 2 too).
//! - 3: `explain`: the packet is denied.
//!
//! The mapping lives in `netpol_agent::cli` (`exit_code`, `error_lines`) so it
//! is unit-tested; any `PolicyErrors` in an error's chain means 2.
use netpol_agent::{
    cli::{self, Command, LogFormat},
    commands,
    config::{self, ParseError},
};

fn main() -> std::process::ExitCode {
    // `run`'s flags may also come from NETPOL_* variables and --config FILE.
    let parsed = match config::parse(std::env::args_os().collect(), std::env::vars_os()) {
        Ok(p) => p,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Settings(e)) => {
            for line in cli::error_lines(&e) {
                eprintln!("{line}");
            }
            return cli::exit_code(&e).into();
        }
    };
    let format = match &parsed.cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    };
    commands::log::init(format);
    for w in &parsed.warnings {
        log::warn!("{w}");
    }
    let result = match parsed.cli.command {
        Command::Run(args) => commands::run::run(args).map(|()| cli::EXIT_OK),
        Command::Check(args) => commands::check::check(&args).map(|()| cli::EXIT_OK),
        Command::Explain(args) => commands::explain::explain(&args).map(|allowed| {
            if allowed {
                cli::EXIT_OK
            } else {
                cli::EXIT_DENIED
            }
        }),
        Command::Stats(args) => commands::stats::stats(&args).map(|()| cli::EXIT_OK),
        Command::Uninstall(args) => commands::uninstall::uninstall(&args).map(|()| cli::EXIT_OK),
        Command::Flows(args) => commands::flows::flows(&args).map(|()| cli::EXIT_OK),
        Command::Monitor(args) => commands::monitor::monitor(&args).map(|()| cli::EXIT_OK),
        Command::Status(args) => commands::status::status(&args).map(|()| cli::EXIT_OK),
        Command::Version(args) => commands::version::version(&args).map(|()| cli::EXIT_OK),
        Command::Completion(args) => commands::completion::completion(&args).map(|()| cli::EXIT_OK),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            for line in cli::error_lines(&e) {
                // A log collector reading JSON gets the final error as a
                // record too.
                match format {
                    LogFormat::Json => log::error!("{line}"),
                    LogFormat::Text => eprintln!("{line}"),
                }
            }
            cli::exit_code(&e).into()
        }
    }
}
