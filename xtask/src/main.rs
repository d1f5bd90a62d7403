//! Developer workflows: `cargo xtask setup | build | lint | test | demo | bench [--traffic] | fuzz`.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so it builds on a
//! fresh machine and can install that toolchain itself.
mod layers;
mod setup;

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and link the eBPF toolchain and test tools (idempotent; root).
    Setup,
    /// Build everything (the eBPF objects are built by agent/build.rs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Import layers of the agent crate, cargo fmt --check, clippy -D warnings
    /// for userspace and for the eBPF crate.
    Lint,
    /// Setup, lint, build, then the whole test suite (privileged tests need root).
    Test {
        /// Also run the large differential test.
        #[arg(long)]
        large: bool,
        /// Extra arguments for `cargo test` (after --).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Build a lab, enforce the LOCAL-PLUS policy, show allowed and denied traffic.
    Demo,
    /// BPF_PROG_TEST_RUN microbenchmark against a no-op XDP program; with
    /// --traffic, the pktgen-style traffic benchmark against nftables,
    /// xdp-filter and the XDP limits (a few minutes; writes
    /// target/bench/traffic.{json,md,png}); with --memory, the kernel memory
    /// of every map at the agent's default sizes (target/bench/memory.json).
    Bench {
        #[arg(long, conflicts_with = "memory")]
        traffic: bool,
        #[arg(long)]
        memory: bool,
        /// Extra arguments for the bench binary (after --).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Long fuzzing run (release build): policy files, Kubernetes object
    /// files and the packet parser (root); findings are minimised into
    /// target/fuzz-crashes/<target>/.
    Fuzz {
        /// Seconds in all, shared between the targets.
        #[arg(long, default_value_t = 300)]
        secs: u64,
        /// Only these targets (repeatable); default: all.
        #[arg(long, value_parser = ["policy", "objects", "packets"])]
        target: Vec<String>,
        /// The first seed (default: from the clock; printed for a rerun).
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn lint() -> anyhow::Result<()> {
    // Layers first: the cheapest check, and the one a refactor breaks.
    layers::check(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src"))?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate for its real target, with the toolchain that builds it.
    let toolchain = setup::bpf_toolchain()?;
    let mut c = Command::new("rustup");
    c.args([
        "run",
        &toolchain,
        "cargo",
        "clippy",
        "--package",
        "agent-ebpf",
    ])
    .args([
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
    ])
    // No test targets: there is no test harness for bpfel-unknown-none.
    .args(["--lib", "--bins", "--", "-D", "warnings"])
    .env("RUSTC_BOOTSTRAP", "1")
    .env("CARGO_TARGET_DIR", "target/ebpf-clippy")
    .env_remove("RUSTUP_TOOLCHAIN")
    .env_remove("CARGO")
    .env_remove("RUSTC");
    run(&mut c)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => {
            setup::setup()?;
            let mut c = cargo();
            c.args(["build", "--workspace"]);
            if release {
                c.arg("--release");
            }
            run(&mut c)
        }
        Cmd::Lint => {
            setup::setup()?;
            lint()
        }
        Cmd::Test { large, extra } => {
            setup::setup()?;
            lint()?;
            // The lab tests start the real binary.
            run(cargo().args(["build", "-p", "netpol-agent"]))?;
            let mut c = cargo();
            c.args(["test", "--workspace"]);
            if large {
                c.env("NETPOL_DIFF_CASES", "20000");
            }
            c.arg("--").args(extra);
            run(&mut c)
        }
        Cmd::Demo => {
            setup::setup()?;
            run(cargo().args(["build", "-p", "netpol-agent"]))?;
            run(cargo().args(["run", "-p", "netpol-tests", "--bin", "netpol-demo"]))
        }
        Cmd::Bench {
            traffic,
            memory,
            mut extra,
        } => {
            setup::setup()?;
            let bin = if traffic {
                // The traffic benchmark drives the real agent binary.
                run(cargo().args(["build", "--release", "-p", "netpol-agent"]))?;
                "netpol-traffic"
            } else {
                if memory {
                    extra.insert(0, "--memory".to_owned());
                }
                "netpol-bench"
            };
            run(cargo()
                .args(["run", "--release", "-p", "netpol-tests", "--bin", bin, "--"])
                .args(extra))
        }
        Cmd::Fuzz { secs, target, seed } => {
            setup::setup()?;
            let mut c = cargo();
            c.args([
                "run",
                "--release",
                "-p",
                "netpol-tests",
                "--bin",
                "netpol-fuzz",
                "--",
            ])
            .args(["--secs", &secs.to_string()]);
            for t in &target {
                c.args(["--target", t]);
            }
            if let Some(s) = seed {
                c.args(["--seed", &s.to_string()]);
            }
            run(&mut c)
        }
    }
}
