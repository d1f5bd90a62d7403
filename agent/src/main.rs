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
use clap::Parser as _;
use netpol_agent::{
    cli::{self, Cli, Command},
    commands,
};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
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
                eprintln!("{line}");
            }
            cli::exit_code(&e).into()
        }
    }
}
