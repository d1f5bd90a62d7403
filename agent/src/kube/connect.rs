//! Where the API server is and who this node is.
use anyhow::Context as _;

/// The API client, configured as kubectl would find it: the kubeconfig named
/// by KUBECONFIG (or ~/.kube/config) if there is one, else the pod's service
/// account (KUBERNETES_SERVICE_HOST/PORT, the token and CA under
/// /var/run/secrets/kubernetes.io/serviceaccount). A kubeconfig may name an
/// `http://` server: the tests' stand-in API server speaks plain HTTP.
pub async fn client() -> anyhow::Result<::kube::Client> {
    let config = ::kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!(
            "no in-cluster config and no KUBECONFIG: {e}; run the agent in a pod with a \
             service account (the DaemonSet in deploy/ does), or set KUBECONFIG to a \
             kubeconfig file"
        )
    })?;
    client_for(config)
}

/// A client for an explicit configuration.
pub fn client_for(config: ::kube::Config) -> anyhow::Result<::kube::Client> {
    let url = config.cluster_url.clone();
    ::kube::Client::try_from(config)
        .with_context(|| format!("building the Kubernetes API client for {url}"))
}

/// The node this agent runs on, as the API's `spec.nodeName` of its pods
/// says it: `--node-name` (or NODE_NAME, which the DaemonSet fills from the
/// downward API) if given, else the host name lowercased, which is the name
/// kubelet registers by default.
pub fn node_name(given: Option<&str>) -> anyhow::Result<String> {
    if let Some(n) = given.map(str::trim).filter(|n| !n.is_empty()) {
        return Ok(n.to_owned());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name for the node name (pass --node-name or set NODE_NAME)")?;
    let host = host.trim().to_ascii_lowercase();
    anyhow::ensure!(
        !host.is_empty(),
        "the host name is empty: pass --node-name or set NODE_NAME"
    );
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_given_wins_over_the_host_name() {
        assert_eq!(node_name(Some("node-7")).unwrap(), "node-7");
        let host = node_name(None).unwrap();
        assert_eq!(host, host.to_ascii_lowercase());
        assert!(!host.is_empty());
        assert_eq!(node_name(Some("  ")).unwrap(), host);
    }

    #[tokio::test]
    async fn clients_build_for_http_and_https() {
        // https builds the TLS configuration (rustls with ring) without
        // connecting: a missing crypto provider would fail here, not in a pod.
        for url in ["http://127.0.0.1:1", "https://127.0.0.1:1"] {
            client_for(::kube::Config::new(url.parse().unwrap())).unwrap();
        }
    }
}
