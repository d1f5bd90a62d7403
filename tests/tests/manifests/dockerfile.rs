//! The Dockerfile against the project's build setup.

use crate::support::{read, repo, rust_toolchain};

/// Dockerfile instructions with continuation lines joined and comments
/// dropped: (INSTRUCTION, rest).
pub fn dockerfile() -> Vec<(String, String)> {
    let text = read(&repo().join("Dockerfile"));
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (ins, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((ins.to_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_builds_with_the_project_setup() {
    let ins = dockerfile();
    let all = |name: &str| -> Vec<&str> {
        ins.iter()
            .filter(|(i, _)| i == name)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    let froms = all("FROM");
    assert_eq!(froms.len(), 2, "a builder and a runtime stage: {froms:?}");
    assert_eq!(froms[0], "debian:12 AS builder");
    assert!(
        froms[1].starts_with("gcr.io/distroless/cc-debian12"),
        "runtime {}",
        froms[1]
    );

    assert!(
        all("ARG").contains(&format!("RUST_TOOLCHAIN={}", rust_toolchain()).as_str()),
        "the builder installs the toolchain of rust-toolchain.toml ({})",
        rust_toolchain()
    );
    let runs = all("RUN");
    let setup = runs
        .iter()
        .find(|r| r.contains("cargo xtask setup"))
        .expect("the builder runs `cargo xtask setup`");
    // The switch the builder uses must exist in setup.
    assert!(setup.contains("NETPOL_SETUP_NO_BPFFS=1"));
    assert!(read(&repo().join("xtask/src/setup.rs")).contains("\"NETPOL_SETUP_NO_BPFFS\""));
    let build = runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("cargo build --release --locked -p netpol-agent"),
        "{build}"
    );
    assert!(read(&repo().join("agent/Cargo.toml")).contains("name = \"netpol-agent\""));
    assert!(build.contains("target/release/netpol-agent /out/netpol-agent"));

    // Build context: every plain COPY source exists and is not ignored.
    let ignored: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_owned())
        .collect();
    assert!(ignored.iter().any(|p| p == "target"), "target/ is ignored");
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        ".cargo",
        "agent",
        "agent-common",
        "agent-ebpf",
        "xtask",
        "tests",
        "examples",
    ] {
        assert!(repo().join(needed).exists(), "{needed}");
        assert!(
            !ignored.iter().any(|p| p == needed),
            ".dockerignore drops {needed}, which the build needs"
        );
    }
    let mut copied_binary = None;
    for copy in all("COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let (flags, paths): (Vec<&str>, Vec<&str>) =
            words.iter().partition(|w| w.starts_with("--"));
        let (dst, srcs) = paths.split_last().expect("COPY SRC... DST");
        if flags.iter().any(|f| f.starts_with("--from=")) {
            assert_eq!(flags, ["--from=builder"]);
            assert_eq!(srcs, ["/out/netpol-agent"]);
            copied_binary = Some(dst.to_string());
        } else {
            for src in srcs {
                assert!(repo().join(src).exists(), "COPY {src}: not in the repo");
            }
        }
    }
    let binary = copied_binary.expect("the runtime copies the binary from the builder");
    assert_eq!(all("ENTRYPOINT"), [format!("[\"{binary}\"]")]);
    assert_eq!(all("USER"), ["0:0"]);
}
