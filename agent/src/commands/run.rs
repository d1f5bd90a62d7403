//! `netpol-agent run`: the node agent. One thread is enough for its work (a
//! reload, a link event, a sweep at a time); the daemon module holds it.
use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Map walks for the endpoint run there; a few at once is plenty, and
        // more would only multiply their memory.
        .max_blocking_threads(4)
        .build()?
        .block_on(crate::daemon::run(args))
}
