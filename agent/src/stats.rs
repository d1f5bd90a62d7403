//! `netpol-agent stats`: the verdict counters of a running agent, read from its
//! pinned maps.
use agent_common::{map_names, Counter};
use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};

use crate::{cli::StatsArgs, datapath::read_counters};

pub fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let path = crate::pin::PinLayout::new(&args.pin_path).map(map_names::COUNTERS);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is the agent running with --pin-path {}?)",
            path.display(),
            args.pin_path.display()
        )
    })?;
    let counters: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    let rows = read_counters(&counters)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<10} {:<20} {:>12} {:>14}",
        "DIR", "VERDICT", "REASON", "PACKETS", "BYTES"
    );
    for r in rows {
        println!(
            "{:<8} {:<10} {:<20} {:>12} {:>14}",
            r.direction, r.verdict, r.reason, r.packets, r.bytes
        );
    }
    Ok(())
}
