//! `netpol-agent stats`: the verdict counters of a running agent, read from
//! its pinned maps.

use super::output;
use crate::{
    bpffs::Pinned,
    cli::{OutputFormat, StatsArgs},
    datapath::rule_names,
    telemetry::aggregates::{read_bookkeeping, read_rows},
};

pub fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let pinned = Pinned::new(&args.pin_path);
    let rules = rule_names(&pinned)?;
    let rows = read_rows(&pinned, &rules)?;
    // The document is the rows alone, as `--json` has always printed them
    // (scripts read it); the map fill is in the table and in /metrics.
    let format = args.output.format();
    if format != OutputFormat::Table {
        print!("{}", output::render(format, &rows, |_| String::new())?);
        return Ok(());
    }
    println!(
        "{:<8} {:<8} {:<20} {:<28} {:>12} {:>14}",
        "TRAFFIC", "VERDICT", "REASON", "RULE", "PACKETS", "BYTES"
    );
    for r in rows {
        println!(
            "{:<8} {:<8} {:<20} {:<28} {:>12} {:>14}",
            r.traffic, r.verdict, r.reason, r.rule, r.packets, r.bytes
        );
    }
    let book = read_bookkeeping(&pinned)?;
    println!();
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>12}",
        "MAP", "ENTRIES", "CAPACITY", "CREATED", "EVICTED"
    );
    for m in &book.maps {
        let (created, evicted) = match m.created {
            Some(c) => (c.to_string(), m.evicted.to_string()),
            // Maps the agent writes: nothing created or evicted by packets.
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<14} {:>10} {:>10} {:>12} {:>12}",
            m.map, m.entries, m.capacity, created, evicted
        );
    }
    println!(
        "events: {} sent, {} rate-limited, {} lost to a full ring",
        book.events_sent, book.events_rate_limited, book.events_ring_full
    );
    println!(
        "denied packets not counted per flow (--denied-flow-rate): {}",
        book.denied_not_recorded
    );
    Ok(())
}
