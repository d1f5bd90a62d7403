//! `netpol-agent run --kubernetes` before it touches the kernel: refused
//! with `--kube-objects`, a clear error when no API server can be found,
//! and no policy compiled or enforced while the first lists are not in (it
//! waits, and stops cleanly on SIGTERM). No privileges needed.
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use netpol_tests::agent_bin;
use netpol_tests::fake_api::FakeApi;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netpol-cli-kube-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["run", "--iface", "no-such-iface0", "--policy-dir"])
        .arg(dir)
        .args(["--pin-path", "/nonexistent/netpol-cli-kube-test"])
        .args(["--state-dir", "/nonexistent/netpol-state"])
        .args(extra)
        // Nothing of the machine's own Kubernetes setup leaks in.
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", dir)
        .env("RUST_LOG", "info");
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("start netpol-agent")
}

#[test]
fn kubernetes_and_kube_objects_exclude_each_other() {
    let dir = temp_dir("exclusive");
    let out = output(agent(&dir, &["--kubernetes", "--kube-objects", "/tmp"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_api_server_found_is_a_clear_error() {
    let dir = temp_dir("noconfig");
    let out = output(agent(&dir, &["--kubernetes"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no in-cluster config and no KUBECONFIG"),
        "{err}"
    );
    assert!(err.contains("set KUBECONFIG"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The API server answers namespaces and pods but not networkpolicies: the
/// agent must not compile a policy from the partial view. Its policy
/// directory has no rules, which it would refuse (exit 2) the moment it
/// compiled; instead it waits, and SIGTERM ends it with 0.
#[test]
fn nothing_is_compiled_before_the_lists_are_in() {
    let dir = temp_dir("unsynced");
    let api = FakeApi::start();
    api.set_refusing(&["networkpolicies"]);
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
    let mut cmd = agent(&dir, &["--kubernetes", "--node-name", "node-a"]);
    cmd.env("KUBECONFIG", dir.join("kubeconfig"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start netpol-agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.requests_for("networkpolicies").len() < 2 {
        assert!(Instant::now() < deadline, "the agent never asked the API");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent did not wait for the lists"
    );
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("as node node-a"), "{err}");
    assert!(err.contains("0 pods listed"), "{err}");
    assert!(!err.contains("policy generation"), "{err}");
    assert!(
        !err.contains("allow-empty-policy"),
        "compiled before the sync: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
