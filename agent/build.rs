//! Builds the eBPF programs (agent-ebpf) for bpfel-unknown-none and lets
//! `include_bytes_aligned!` embed them, the way aya-template does.
//!
//! The toolchain comes from `cargo xtask setup`: either a rustup nightly with
//! rust-src, or Debian's rustc-web linked as the rustup toolchain `bpf-debian`
//! (docs/design.md section 4). The Debian compiler is "stable", so this build script
//! sets RUSTC_BOOTSTRAP=1 for the eBPF sub-build only.
use std::process::Command;

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

const HINT: &str = "the eBPF toolchain is missing: run `cargo xtask setup` (as root) first";

fn rustup_toolchains() -> Vec<String> {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has_rust_src(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let sysroot = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            std::path::Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
        .unwrap_or(false)
}

/// The toolchain named by NETPOL_BPF_TOOLCHAIN, else `bpf-debian`, else a nightly
/// that has rust-src.
fn pick_toolchain() -> anyhow::Result<String> {
    println!("cargo:rerun-if-env-changed=NETPOL_BPF_TOOLCHAIN");
    if let Ok(t) = std::env::var("NETPOL_BPF_TOOLCHAIN") {
        return Ok(t);
    }
    let toolchains = rustup_toolchains();
    if toolchains.iter().any(|t| t == "bpf-debian") && has_rust_src("bpf-debian") {
        return Ok("bpf-debian".into());
    }
    toolchains
        .into_iter()
        .find(|t| t.starts_with("nightly") && has_rust_src(t))
        .ok_or_else(|| anyhow!("no toolchain with rust-src for bpfel-unknown-none; {HINT}"))
}

/// `git` run in this crate's directory; its trimmed output when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn rerun_if_exists(path: std::path::PathBuf) {
    // A missing path would make cargo run this script on every build.
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// What `netpol-agent version` reports about the build, as environment
/// variables of the crate: the git revision (`NETPOL_GIT_REVISION` if set,
/// for builds from a tree without .git, such as the image's context; else
/// `git rev-parse --short HEAD`; else "unknown"), the compiler, and the eBPF
/// toolchain.
fn build_info(ebpf_toolchain: &str) {
    println!("cargo:rerun-if-env-changed=NETPOL_GIT_REVISION");
    let revision = std::env::var("NETPOL_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETPOL_GIT_REVISION={revision}");
    // A checkout moves HEAD, a commit moves the branch HEAD names (its file,
    // or its line in packed-refs); in a worktree they sit in different dirs.
    let path = |args: &[&str]| git(args).map(std::path::PathBuf::from);
    if let Some(dir) = path(&["rev-parse", "--absolute-git-dir"]) {
        rerun_if_exists(dir.join("HEAD"));
    }
    if let Some(common) = path(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            rerun_if_exists(common.join(branch));
        }
        rerun_if_exists(common.join("packed-refs"));
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETPOL_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=NETPOL_EBPF_TOOLCHAIN={ebpf_toolchain}");
}

fn main() -> anyhow::Result<()> {
    let toolchain = pick_toolchain()?;
    build_info(&toolchain);
    which::which("bpf-linker").map_err(|_| anyhow!("bpf-linker is not on PATH; {HINT}"))?;
    if !toolchain.starts_with("nightly") {
        // Unstable -Z build-std for the eBPF sub-build only: aya-build passes our
        // environment to the child cargo, and build scripts run in their own process.
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    // aya-build turns every stderr line of the eBPF sub-build into a cargo
    // warning; without progress lines only real diagnostics remain.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("agent-ebpf manifest has no parent"))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))
        .with_context(|| format!("building the eBPF programs with toolchain {toolchain}; {HINT}"))
}
