//! `run --kubernetes --remove-taint`: the node registers with the
//! `netpol-agent.io/agent-not-ready:NoSchedule` taint, and the agent removes
//! it from its Node (and only it) once its programs and policy are live, so
//! no pod is scheduled on a node that does not enforce yet. The stand-in API
//! server serves the Node and records the PATCH; a taint another controller
//! adds while the patch is in flight is never lost.
use std::time::{Duration, Instant};

use netpol_tests::fake_api::FakeApi;
use netpol_tests::{require_root, AgentProcess, Lab, READY_MARKER};
use serde_json::{json, Value};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/localplus");
const TAINT: &str = "netpol-agent.io/agent-not-ready";

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["key"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_agent_removes_its_not_ready_taint_once_it_enforces() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let listener = lab
        .node
        .run_in(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binding the fake API server in the node namespace");
    let api = FakeApi::start_on(listener);
    api.set_node(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "lab-node"},
        "spec": {"taints": [
            {"key": TAINT, "effect": "NoSchedule"},
            {"key": "example.com/maintenance", "value": "true", "effect": "NoExecute"},
        ]},
    }));

    let dir = std::env::temp_dir().join(format!("netpol-lab-taint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    // The agent inherits it; this target holds only this test.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let policy = std::path::Path::new(EXAMPLE);

    // Opt-in: without the flag the Node is left alone.
    let agent = AgentProcess::spawn(&lab, policy, &["--kubernetes", "--node-name", "lab-node"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(api.node_patches().is_empty(), "{:?}", api.node_patches());
    drop(agent);

    let agent = AgentProcess::spawn(
        &lab,
        policy,
        &["--kubernetes", "--node-name", "lab-node", "--remove-taint"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while taint_keys(&api.node("lab-node").unwrap()).contains(&TAINT.to_owned()) {
        assert!(
            Instant::now() < deadline,
            "taint still there: {:?}\n{}",
            api.node_patches(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only its own taint goes; another controller's stays.
    assert_eq!(
        taint_keys(&api.node("lab-node").unwrap()),
        ["example.com/maintenance"]
    );
    let patches = api.node_patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let p = &patches[0];
    assert_eq!(
        (p.status, p.content_type.as_str()),
        (200, "application/merge-patch+json")
    );
    // Computed from a known version, so it cannot undo a concurrent change.
    assert!(p.body["metadata"]["resourceVersion"].is_string(), "{p:?}");
    let log = agent.log();
    let ready = log.find(READY_MARKER).unwrap();
    let removed = log
        .find(&format!("taint {TAINT} removed"))
        .unwrap_or_else(|| panic!("no removal logged:\n{log}"));
    assert!(ready < removed, "taint removed before enforcing:\n{log}");
}

/// The patch carries the resourceVersion it was computed from: when another
/// controller changes the Node in between, the server answers 409, and the
/// retry starts from the Node as it is, so the other taint survives.
#[test]
fn a_taint_added_concurrently_survives_the_removal() {
    let api = FakeApi::start();
    api.set_node(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": TAINT, "effect": "NoSchedule"}]},
    }));
    api.race_next_node_patch(json!({"key": "example.com/late", "effect": "NoSchedule"}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = kube::Config::new(api.url().parse().unwrap());
        let client = netpol_agent::kube::client_for(config).unwrap();
        let removal = netpol_agent::kube::remove_taint(client, "n1".into(), TAINT);
        tokio::time::timeout(Duration::from_secs(20), removal)
            .await
            .expect("the taint was not removed within 20 s");
    });
    let statuses: Vec<u16> = api.node_patches().iter().map(|p| p.status).collect();
    assert_eq!(statuses, [409, 200]);
    assert_eq!(taint_keys(&api.node("n1").unwrap()), ["example.com/late"]);
}
