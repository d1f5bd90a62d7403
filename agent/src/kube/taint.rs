//! The node taint that keeps pods off a node until the agent enforces there.
//!
//! After a reboot the pins are gone, and kubelet may start pods before the
//! agent has attached: those pods would talk unchecked. A node registered
//! with `netpol-agent.io/agent-not-ready:NoSchedule` takes no pods (except
//! the ones that tolerate it, like the agent's own DaemonSet) until the agent
//! removes the taint once its programs and a policy are live, the way
//! Cilium's `agent-not-ready` taint works.
use ::kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use k8s_openapi::api::core::v1::Node;
use log::{info, warn};

/// Removes the taint `key` (whatever its effect) from node `name`, retrying
/// with back-off until it is gone or was never there. The patch carries the
/// resourceVersion it was computed from, so a taint another controller added
/// meanwhile is never overwritten: the API server answers 409 and the next
/// attempt starts from the node as it is.
pub async fn remove_taint(client: Client, name: String, key: &'static str) {
    let api: Api<Node> = Api::all(client);
    let mut wait = super::FIRST_RETRY;
    loop {
        match remove_once(&api, &name, key).await {
            Ok(true) => {
                info!("node {name}: taint {key} removed; pods may be scheduled here");
                return;
            }
            Ok(false) => {
                info!("node {name}: no taint {key} to remove");
                return;
            }
            Err(e) => {
                warn!(
                    "node {name}: removing taint {key}: {e:#}; retrying in {}s (the agent \
                     needs get and patch on nodes)",
                    wait.as_secs()
                );
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(super::MAX_RETRY);
    }
}

/// One attempt: whether the taint was there and is now removed.
async fn remove_once(api: &Api<Node>, name: &str, key: &str) -> anyhow::Result<bool> {
    let node = api.get(name).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    if !taints.iter().any(|t| t.key == key) {
        return Ok(false);
    }
    let kept: Vec<_> = taints.into_iter().filter(|t| t.key != key).collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": kept},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(true)
}
