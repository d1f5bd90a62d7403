//! `netpol-agent flows`: the flows a running agent tracks (conntrack and the
//! denied-flow maps), read from its pinned maps.
use std::time::Duration;

use anyhow::Context as _;

use super::output;
use crate::{
    bpffs::Pinned,
    cli::{FlowsArgs, OutputFormat, UsageError},
    datapath::rule_names,
    telemetry::flows::{read_flows, table},
};

pub fn flows(args: &FlowsArgs) -> anyhow::Result<()> {
    let pinned = Pinned::new(&args.pin_path);
    loop {
        let rules = rule_names(&pinned)?;
        let mut selection = args
            .filter
            .selection()
            .map_err(|e| UsageError(format!("--{e}")))?;
        read_flows(&pinned, &rules, &mut selection)?;
        let flows = selection.into_records();
        let format = args.output.format();
        if format == OutputFormat::Table && args.watch.is_some() {
            // Clear the screen, like watch(1).
            print!("\x1b[H\x1b[2J");
        }
        print!("{}", output::render(format, &flows, |f| table(f))?);
        let Some(secs) = args.watch else {
            return Ok(());
        };
        std::thread::sleep(Duration::from_secs(secs.max(1)));
        // Keep going until interrupted; a vanished agent ends the watch.
        rule_names(&pinned).context("the agent is gone")?;
    }
}
