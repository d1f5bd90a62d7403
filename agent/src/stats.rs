//! `netpol-agent stats` and `netpol-agent flows`: the verdict counters of a
//! running agent, read from its pinned maps.
use std::time::Duration;

use anyhow::Context as _;

use crate::{
    aggregates::{read_bookkeeping, read_rows, rule_names},
    cli::{FlowsArgs, StatsArgs},
    flows::{read_flows, table},
    pinned::Pinned,
};

pub fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let pinned = Pinned::new(&args.pin_path);
    let rules = rule_names(&pinned)?;
    let rows = read_rows(&pinned, &rules)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<8} {:<20} {:<28} {:>12} {:>14}",
        "DIR", "VERDICT", "REASON", "RULE", "PACKETS", "BYTES"
    );
    for r in rows {
        println!(
            "{:<8} {:<8} {:<20} {:<28} {:>12} {:>14}",
            r.direction, r.verdict, r.reason, r.rule, r.packets, r.bytes
        );
    }
    let book = read_bookkeeping(&pinned)?;
    println!();
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>12}",
        "MAP", "ENTRIES", "CAPACITY", "CREATED", "EVICTED"
    );
    for m in &book.maps {
        println!(
            "{:<14} {:>10} {:>10} {:>12} {:>12}",
            m.map, m.entries, m.capacity, m.created, m.evicted
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

pub fn flows(args: &FlowsArgs) -> anyhow::Result<()> {
    let pinned = Pinned::new(&args.pin_path);
    loop {
        let rules = rule_names(&pinned)?;
        let flows = args
            .filter
            .apply(read_flows(&pinned, &rules)?)
            .map_err(|e| crate::cli::UsageError(format!("--{e}")))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&flows)?);
        } else {
            if args.watch.is_some() {
                // Clear the screen, like watch(1).
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", table(&flows));
        }
        let Some(secs) = args.watch else {
            return Ok(());
        };
        std::thread::sleep(Duration::from_secs(secs.max(1)));
        // Keep going until interrupted; a vanished agent ends the watch.
        rule_names(&pinned).context("the agent is gone")?;
    }
}
