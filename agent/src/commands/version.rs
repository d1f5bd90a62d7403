//! `netpol-agent version`: what was built (version, git revision, compiler,
//! the embedded eBPF object's SHA-256) and what this kernel offers the agent
//! (release, BTF, bpffs, TCX), so that a bug report or an upgrade check has
//! it in one place.
use std::fmt::Write as _;
use std::path::Path;

use super::output;
use crate::{
    bpffs::mount::{is_bpffs, BPFFS},
    cli::VersionArgs,
};

/// Where the kernel publishes its BTF, which the programs need.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The first Linux release with TCX links (bpf_link for tc), which the
/// egress program is attached with.
const TCX_SINCE: (u32, u32) = (6, 6);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VersionDoc {
    pub version: String,
    /// `git rev-parse --short HEAD` of the build, or "unknown".
    pub git_revision: String,
    /// `rustc --version` of the compiler that built the agent.
    pub rustc: String,
    pub ebpf_object: EbpfObject,
    pub kernel: Kernel,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EbpfObject {
    /// Hex SHA-256 of the object embedded in the binary.
    pub sha256: String,
    pub bytes: usize,
    /// The toolchain it was compiled with (see docs/development.md).
    pub toolchain: String,
}

/// What the running kernel offers, found at run time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Kernel {
    /// `uname -r`; `None` when it cannot be read.
    pub release: Option<String>,
    /// /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    /// bpffs is mounted at /sys/fs/bpf.
    pub bpffs: bool,
    /// TCX is there (Linux >= 6.6); `None` when the release does not say.
    pub tcx: Option<bool>,
}

pub fn version(args: &VersionArgs) -> anyhow::Result<()> {
    let doc = VersionDoc {
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: env!("NETPOL_GIT_REVISION").into(),
        rustc: env!("NETPOL_RUSTC_VERSION").into(),
        ebpf_object: ebpf_object(crate::NETPOL_EBPF, env!("NETPOL_EBPF_TOOLCHAIN")),
        kernel: kernel(),
    };
    print!("{}", output::render(args.output.format(), &doc, table)?);
    Ok(())
}

fn ebpf_object(object: &[u8], toolchain: &str) -> EbpfObject {
    EbpfObject {
        sha256: crate::sha256_hex(object),
        bytes: object.len(),
        toolchain: toolchain.into(),
    }
}

fn kernel() -> Kernel {
    let release = nix::sys::utsname::uname()
        .ok()
        .map(|u| u.release().to_string_lossy().into_owned());
    let tcx = release
        .as_deref()
        .and_then(release_version)
        .map(|v| v >= TCX_SINCE);
    Kernel {
        release,
        btf: Path::new(VMLINUX_BTF).exists(),
        bpffs: is_bpffs(Path::new(BPFFS)),
        tcx,
    }
}

/// Major and minor of a kernel release such as `6.18.0-12-amd64` or `6.6`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What `version` prints for people.
pub fn table(v: &VersionDoc) -> String {
    let mut out = format!("netpol-agent {}\n", v.version);
    let row = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "{:<15}{value}", format!("{key}:"));
    };
    row(&mut out, "git revision", &v.git_revision);
    row(&mut out, "rustc", &v.rustc);
    let o = &v.ebpf_object;
    row(
        &mut out,
        "eBPF object",
        &format!(
            "sha256:{} ({} bytes, {} toolchain)",
            o.sha256, o.bytes, o.toolchain
        ),
    );
    let k = &v.kernel;
    row(
        &mut out,
        "kernel",
        k.release.as_deref().unwrap_or("unknown"),
    );
    let yes_no = |ok: bool, yes: &str, no: &str| {
        if ok {
            format!("yes ({yes})")
        } else {
            format!("no: {no}")
        }
    };
    row(
        &mut out,
        "  BTF",
        &yes_no(
            k.btf,
            VMLINUX_BTF,
            &format!("{VMLINUX_BTF} is missing; the programs need a kernel with BTF"),
        ),
    );
    row(
        &mut out,
        "  bpffs",
        &yes_no(
            k.bpffs,
            &format!("mounted at {BPFFS}"),
            &format!("not mounted at {BPFFS}; `run` mounts it when it has CAP_SYS_ADMIN"),
        ),
    );
    let (major, minor) = TCX_SINCE;
    let tcx = match k.tcx {
        Some(ok) => yes_no(
            ok,
            &format!("Linux >= {major}.{minor}"),
            &format!("the egress program needs TCX, Linux >= {major}.{minor}"),
        ),
        None => "unknown (the kernel release does not say)".into(),
    };
    row(&mut out, "  TCX", &tcx);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(release_version("6.18.0-12-amd64"), Some((6, 18)));
        assert_eq!(release_version("6.6"), Some((6, 6)));
        assert_eq!(release_version("5.15.0-105-generic"), Some((5, 15)));
        assert_eq!(release_version("6.10+rc1"), Some((6, 10)));
        assert_eq!(release_version("6"), None);
        assert_eq!(release_version("linux"), None);
        // Compared as numbers: 6.10 is after 6.6, 5.19 before it.
        assert!(release_version("6.10.1").unwrap() >= TCX_SINCE);
        assert!(release_version("5.19.0").unwrap() < TCX_SINCE);
    }

    #[test]
    fn the_object_hash_is_sha256_of_its_bytes() {
        // FIPS 180-2's "abc" example.
        let o = ebpf_object(b"abc", "bpf-debian");
        assert_eq!(
            o.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(o.bytes, 3);
        let embedded = ebpf_object(crate::NETPOL_EBPF, "x");
        assert_eq!(embedded.bytes, crate::NETPOL_EBPF.len());
        assert_ne!(embedded.sha256, ebpf_object(crate::LAB_EBPF, "x").sha256);
    }

    #[test]
    fn table_says_what_is_missing() {
        let doc = VersionDoc {
            version: "0.1.0".into(),
            git_revision: "abc1234".into(),
            rustc: "rustc 1.95.0".into(),
            ebpf_object: ebpf_object(b"abc", "bpf-debian"),
            kernel: Kernel {
                release: Some("5.15.0".into()),
                btf: false,
                bpffs: true,
                tcx: Some(false),
            },
        };
        let text = table(&doc);
        assert!(
            text.starts_with("netpol-agent 0.1.0\ngit revision:  abc1234\n"),
            "{text}"
        );
        assert!(text.contains("eBPF object:   sha256:ba7816bf"), "{text}");
        assert!(text.contains("(3 bytes, bpf-debian toolchain)"), "{text}");
        assert!(
            text.contains("  BTF:         no: /sys/kernel/btf/vmlinux is missing"),
            "{text}"
        );
        assert!(
            text.contains("  bpffs:       yes (mounted at /sys/fs/bpf)"),
            "{text}"
        );
        assert!(
            text.contains("  TCX:         no: the egress program needs TCX, Linux >= 6.6"),
            "{text}"
        );
    }
}
