use clap::Parser as _;
use netpol_agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(netpol_agent::run::run(args))),
        Command::Check(args) => netpol_agent::check::check(&args),
        Command::Stats(args) => netpol_agent::stats::stats(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpol-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
