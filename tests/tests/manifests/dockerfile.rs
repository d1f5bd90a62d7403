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
    // The builder, the stage the root file system is taken from (the
    // builder unless ROOTFS says otherwise, as in the container test), and
    // the runtime from scratch.
    assert_eq!(
        froms,
        [
            "debian:12 AS builder",
            "${ROOTFS} AS rootfs",
            "scratch AS runtime"
        ],
    );
    assert_eq!(ins[0], ("ARG".to_owned(), "ROOTFS=builder".to_owned()));

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
    assert!(
        build.contains("sh deploy/image/rootfs.sh /out/netpol-agent /out/rootfs"),
        "the runtime's files are laid out by the script the container test uses: {build}"
    );
    assert!(repo().join("deploy/image/rootfs.sh").is_file());

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
        "deploy",
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
            assert_eq!(flags, ["--from=rootfs"]);
            assert_eq!(srcs, ["/out/rootfs/"]);
            assert_eq!(*dst, "/");
            copied_binary = Some("/usr/local/bin/netpol-agent".to_owned());
        } else {
            for src in srcs {
                assert!(repo().join(src).exists(), "COPY {src}: not in the repo");
            }
        }
    }
    let binary = copied_binary.expect("the runtime copies its root file system from the builder");
    assert!(read(&repo().join("deploy/image/rootfs.sh")).contains(&format!("\"$out{binary}\"")));
    assert_eq!(all("ENTRYPOINT"), [format!("[\"{binary}\"]")]);
    assert_eq!(all("USER"), ["0:0"]);
}
