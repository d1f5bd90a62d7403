//! No fail-open window at start: an agent started with a policy directory
//! that is rejected enforces the last good policy kept on the node's disk
//! (not ready, `netpol_agent_policy_fallback 1`) until the directory is
//! fixed; a kept policy that is corrupt is refused whole; and an interface
//! deleted while the first reconcile runs is skipped instead of killing the
//! agent.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netpol_agent::bpffs::PinLayout;
use netpol_agent::datapath::{Datapath, LoadOptions};
use netpol_tests::observe::{http_get, metric_sum, socket_ok};
use netpol_tests::Family::V4;
use netpol_tests::Proto::Tcp;
use netpol_tests::{
    agent_bin, assert_enforced, ensure_bpffs, require_root, serve, AgentProcess, Edge, Lab, Netns,
};

/// The LOCAL-PLUS policy by address: no Kubernetes objects needed.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/localplus-cidr");
const STATE_FILE: &str = "last-good-policy.json";
/// A policy file that does not parse: port out of range.
const BAD: &str = "rules:\n  - name: broken\n    from: any\n    to: any\n    ports: [70000/tcp]\n";

/// Removes a scratch directory, whatever happens.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> DirGuard {
    let d = std::env::temp_dir().join(format!(
        "netpol-failopen-{name}-{}",
        netpol_tests::netns::unique_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    DirGuard(d)
}

fn copy_example(to: &Path) {
    for e in std::fs::read_dir(EXAMPLE).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn status(agent: &AgentProcess) -> serde_json::Value {
    serde_json::from_str(&socket_ok(agent, "/status")).unwrap()
}

#[test]
fn a_directory_rejected_at_start_falls_back_to_the_last_good_policy() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let policy = scratch("policy");
    copy_example(&policy.0);
    let state = scratch("state");
    let state_arg = ["--state-dir", state.0.to_str().unwrap()];
    let edges = [
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::deny("wallet", "ledger-a", V4, Tcp, 50051),
        Edge::deny("world", "ledger-a", V4, Tcp, 8080),
    ];
    let _servers = serve(&lab, &edges);

    // A good start keeps what it enforces.
    let first = AgentProcess::spawn(&lab, &policy.0, &state_arg);
    let kept = state.0.join(STATE_FILE);
    assert!(kept.is_file(), "no {}:\n{}", kept.display(), first.log());
    drop(first);

    // A reboot: pins gone, and the directory broken meanwhile.
    std::fs::write(policy.0.join("zz-broken.yaml"), BAD).unwrap();
    let agent = AgentProcess::spawn(&lab, &policy.0, &state_arg);
    let log = agent.log();
    assert!(
        log.contains("zz-broken.yaml:5:13") && log.contains("enforcing the last good policy"),
        "{log}"
    );
    assert_enforced(&lab, &edges, &agent, "on the last good policy");
    let s = status(&agent);
    assert_eq!(s["ready"], false, "{s}");
    assert_eq!(s["policy_fallback"], true, "{s}");
    assert!(
        s["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("zz-broken.yaml")),
        "{s}"
    );
    let (code, body) = http_get(&lab.node, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("last good policy"), "{body}");
    let (_, metrics) = http_get(&lab.node, "/metrics");
    assert_eq!(
        metric_sum(&metrics, "netpol_agent_policy_fallback", &[]),
        1,
        "{metrics}"
    );
    // A broken directory is never kept as the last good policy.
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(!text.contains("zz-broken"), "{text}");

    // Fixed: the reload path picks the directory up and the agent is ready.
    std::fs::remove_file(policy.0.join("zz-broken.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(&agent);
        if s["ready"] == true && s["policy_fallback"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready again: {s}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = http_get(&lab.node, "/readyz");
    assert_eq!(code, 200);
    let (_, metrics) = http_get(&lab.node, "/metrics");
    assert_eq!(metric_sum(&metrics, "netpol_agent_policy_fallback", &[]), 0);
    assert_enforced(&lab, &edges, &agent, "once the directory is fixed");
}

/// `run` on `dir` with `state`; it must stop before touching the kernel.
fn run_refused(dir: &Path, state: &Path) -> (Option<i32>, String) {
    let out = Command::new(agent_bin())
        .args(["run", "--iface", "no-such-iface0", "--policy-dir"])
        .arg(dir)
        .args(["--pin-path", "/nonexistent/netpol-failopen-test"])
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("start netpol-agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_usable_last_good_policy_a_rejected_directory_exits_2() {
    let policy = scratch("refused");
    std::fs::write(policy.0.join("bad.yaml"), BAD).unwrap();
    let state = scratch("refused-state");

    // Nothing kept: today's refusal.
    let (code, err) = run_refused(&policy.0, &state.0);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.yaml:5:13"), "{err}");

    // Kept but corrupt (truncated, edited, or not ours): refused whole,
    // with the file named, and the directory's own error still reported.
    let kept = state.0.join(STATE_FILE);
    for (text, want) in [
        ("{\"format\": 1, \"sha256\": \"00\", \"files\": [", "not a last good policy document"),
        (
            "{\"format\": 1, \"sha256\": \"00\", \"files\": [{\"name\": \"a.yaml\", \"text\": \"rules: []\"}]}",
            "sha256: the files do not match",
        ),
        ("{\"format\": 9, \"sha256\": \"00\", \"files\": []}", "format: 9"),
    ] {
        std::fs::write(&kept, text).unwrap();
        let (code, err) = run_refused(&policy.0, &state.0);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want) && err.contains(STATE_FILE), "{want}: {err}");
        assert!(err.contains("bad.yaml:5:13"), "{err}");
    }
}

#[test]
fn an_interface_deleted_during_the_first_reconcile_is_skipped() {
    if !require_root() {
        return;
    }
    ensure_bpffs();
    let ns = Netns::new("race");
    for i in 0..3 {
        ns.ip(&[
            "link",
            "add",
            &format!("race{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("peer{i}"),
        ]);
        ns.ip(&["link", "set", &format!("race{i}"), "up"]);
    }
    let pins = DirGuard(AgentProcess::new_pin_path());
    let name = ns.name().to_owned();
    let (attached, deleted) = ns.run_in(|| {
        let (mut dp, _) = Datapath::load_pinned(&LoadOptions::default(), &PinLayout::new(&pins.0))
            .expect("loading the datapath");
        let mut deleted = false;
        // race1 is listed, then deleted just before its attach: the moment a
        // pod going away races the agent's start.
        let attached = netpol_agent::daemon::reconcile_with(
            &mut dp,
            &["race*".to_owned()],
            netpol_agent::datapath::IngressHook::Auto,
            true,
            &mut |iface| {
                if iface == "race1" {
                    let out = Command::new("ip")
                        .args(["-n", &name, "link", "del", "race1"])
                        .output()
                        .unwrap();
                    deleted = out.status.success();
                }
            },
        );
        (attached.map_err(|e| format!("{e:#}")), deleted)
    });
    assert!(deleted, "race1 was not deleted at the racing moment");
    assert_eq!(
        attached,
        Ok(vec!["race0".to_owned(), "race2".to_owned()]),
        "the first reconcile must skip an interface that vanished and enforce the rest"
    );
}
