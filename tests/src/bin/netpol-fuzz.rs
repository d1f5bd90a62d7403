//! Long fuzzing runs: `cargo xtask fuzz --secs N [--target policy|objects|packets]
//! [--seed S] [--crash-dir DIR]`. Findings are written, minimised, under the
//! crash directory (default `target/fuzz-crashes`); exit 1 when there are any.
use std::path::PathBuf;
use std::time::Duration;

use netpol_tests::fuzz::{packets, run_bytes, PeakAlloc, Target};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn main() {
    let mut secs = 60u64;
    let mut targets = Vec::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut crash_dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/fuzz-crashes"
    ));
    let mut args = std::env::args().skip(1);
    let usage = "usage: netpol-fuzz [--secs N] [--target policy|objects|packets]... [--seed S] [--crash-dir DIR]";
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value\n{usage}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--secs" => secs = value().parse().unwrap_or_else(|_| bad(usage)),
            "--seed" => seed = value().parse().unwrap_or_else(|_| bad(usage)),
            "--crash-dir" => crash_dir = PathBuf::from(value()),
            "--target" => targets.push(Target::parse(&value()).unwrap_or_else(|| bad(usage))),
            _ => bad(usage),
        }
    }
    if targets.is_empty() {
        targets = Target::ALL.to_vec();
    }
    let each = Duration::from_secs(secs) / targets.len() as u32;
    let mut found = 0;
    for t in targets {
        let report = match t {
            Target::Packets => match packets::run(each, seed, &crash_dir) {
                Some(r) => r,
                None => continue,
            },
            _ => run_bytes(t, each, seed, &crash_dir),
        };
        println!(
            "{}: {} inputs in {:.1?} (seed {seed}), slowest {:?}, peak {} KiB{}, {} findings",
            t.name(),
            report.execs,
            report.elapsed,
            report.slowest,
            report.peak_bytes >> 10,
            if PeakAlloc::installed() {
                ""
            } else {
                " (not counted)"
            },
            report.findings.len()
        );
        for f in &report.findings {
            println!("  {}: {} -> {:?}", f.kind, f.detail, f.saved);
        }
        found += report.findings.len();
    }
    std::process::exit(i32::from(found > 0));
}

fn bad<T>(usage: &str) -> T {
    eprintln!("{usage}");
    std::process::exit(2)
}
