//! `cargo xtask setup`: everything the build and the tests need on a fresh
//! Debian 12 machine (docs/design.md section 4), each step skipped when already done.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::run;

/// The rustup name under which Debian's rustc-web (with rust-src) is linked.
pub const BPF_TOOLCHAIN: &str = "bpf-debian";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: the eBPF toolchain, and the tools the tests drive.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "iproute2",
    "util-linux",
    "procps",
    "bpftool",
    "iputils-ping",
    // Peers of the traffic benchmark.
    "nftables",
    "xdp-tools",
    // ethtool turns on GRO (veth NAPI) so the unfiltered peers receive
    // live frames without an XDP program; the chart font.
    "ethtool",
    "fonts-dejavu-core",
    // Real TCP sockets for the bulk scenario of the traffic benchmark.
    "iperf3",
    // promtool, which checks the /metrics output in the tests.
    "prometheus",
    // `ruby -c Vagrantfile`, and a Python for the manifest validator.
    "ruby",
    "python3",
    "python3-venv",
    // The container test builds the image from the Dockerfile and runs it:
    // Debian's podman, with runc (the runtime that works in this sandbox).
    "podman",
    "runc",
];

/// Python tools the tests drive, installed into their own venv (Debian's
/// Python refuses system-wide pip installs).
pub const TOOLS_VENV: &str = "/opt/netpol-agent-dev/venv";
const PIP_TOOLS: &[&str] = &["kubernetes-validate==1.37.0"];

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect()
}

fn toolchains() -> Vec<String> {
    output(Command::new("rustup").args(["toolchain", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The toolchain agent/build.rs will use for the eBPF crate.
pub fn bpf_toolchain() -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("NETPOL_BPF_TOOLCHAIN") {
        return Ok(t);
    }
    if toolchains().iter().any(|t| t == BPF_TOOLCHAIN) {
        return Ok(BPF_TOOLCHAIN.into());
    }
    bail!("toolchain {BPF_TOOLCHAIN} is not linked: run `cargo xtask setup`")
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next();
            f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
        })
}

pub fn setup() -> anyhow::Result<()> {
    let missing = missing_packages();
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {missing:?}: run `cargo xtask setup` as root");
        }
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    if !toolchains().iter().any(|t| t == BPF_TOOLCHAIN) {
        run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir() {
        bail!("rust-web-src did not provide /usr/lib/rustlib/src/rust/library/core");
    }

    let linker_ok = output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"))
        .context("installing bpf-linker")?;
    }

    install_python_tools()?;
    check_kubectl();

    // Image builds (Dockerfile) cannot mount and never run the agent there.
    let skip_mount = std::env::var_os("NETPOL_SETUP_NO_BPFFS").is_some();
    if !bpffs_mounted() && is_root() && !skip_mount {
        std::fs::create_dir_all("/sys/fs/bpf")?;
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    eprintln!(
        "xtask: setup complete (eBPF toolchain: {BPF_TOOLCHAIN}, bpf-linker {BPF_LINKER_VERSION})"
    );
    Ok(())
}

/// The manifests test renders deploy/ with `kubectl kustomize`, which needs
/// kustomize v5 (`labels:`, `patches:`). The machines come with such a
/// kubectl; Debian 12's kubernetes-client embeds kustomize v2, too old, so
/// nothing is installed here: a machine without one is told, and the test
/// fails under CI=true.
fn check_kubectl() {
    let version = output(Command::new("kubectl").args(["version", "--client"]));
    let ok = version.as_deref().is_some_and(|v| {
        v.lines().any(|l| {
            l.strip_prefix("Kustomize Version: v")
                .and_then(|rest| rest.split('.').next())
                .and_then(|major| major.parse::<u32>().ok())
                .is_some_and(|major| major >= 5)
        })
    });
    if !ok {
        eprintln!(
            "xtask: warning: no kubectl with kustomize v5 on PATH; \
             the manifests test needs one to render deploy/"
        );
    }
}

/// kubernetes-validate (offline Kubernetes schemas) in TOOLS_VENV.
fn install_python_tools() -> anyhow::Result<()> {
    let venv = Path::new(TOOLS_VENV);
    let pip = venv.join("bin/pip");
    let have = output(Command::new(&pip).args(["freeze", "--all"])).unwrap_or_default();
    let missing: Vec<&str> = PIP_TOOLS
        .iter()
        .copied()
        .filter(|t| !have.lines().any(|l| l.eq_ignore_ascii_case(t)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Python tools {missing:?}: run `cargo xtask setup` as root");
    }
    if !pip.exists() {
        // Debian's interpreter, not whatever python3 is first on PATH.
        run(Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(venv))
        .context("creating the tools venv")?;
    }
    run(Command::new(&pip)
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(&missing))
    .context("installing Python tools")
}
