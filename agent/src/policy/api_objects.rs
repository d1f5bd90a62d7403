//! Kubernetes objects that come from the API server rather than from files.
//! Each object arrives as its own JSON text (JSON is YAML) and goes through
//! the same reader as an objects file, so both sources give the same
//! `Cluster` and the same NetworkPolicies for the same objects.
use super::cluster::{merge_clusters, parse_objects, Cluster};
use super::error::{PolicyError, PolicyErrors};
use super::model::PolicyFile;
use super::parse::Ctx;

/// What one object (or one objects text) says: its part of the `Cluster`,
/// and its NetworkPolicies as a policy file named `name` (`None` when it has
/// none). `name` is what errors call the object, e.g.
/// `kubernetes:pods/default/web-0`.
pub fn parse_object_text(
    name: &str,
    text: &str,
) -> Result<(Cluster, Option<PolicyFile>), PolicyErrors> {
    let (cluster, netpols) = parse_objects(name, text)?;
    if netpols.is_empty() {
        return Ok((cluster, None));
    }
    let mut cx = Ctx::new_kube(name);
    for doc in &netpols {
        cx.read_document(doc);
    }
    let (file, errors) = cx.take();
    PolicyErrors::check(errors)?;
    Ok((cluster, Some(file)))
}

/// Objects parsed one by one, put together: clusters merged in order, policy
/// files kept, every object's errors reported at once.
pub fn objects_from_parts(
    parts: impl IntoIterator<Item = Result<(Cluster, Option<PolicyFile>), PolicyErrors>>,
) -> Result<(Cluster, Vec<PolicyFile>), PolicyErrors> {
    let mut clusters = Vec::new();
    let mut files = Vec::new();
    let mut errors: Vec<PolicyError> = Vec::new();
    for part in parts {
        match part {
            Ok((cluster, file)) => {
                clusters.push(cluster);
                files.extend(file);
            }
            Err(e) => errors.extend(e.0),
        }
    }
    PolicyErrors::check(errors)?;
    Ok((merge_clusters(clusters), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":"web-0","namespace":"shop","labels":{"app":"web"}},
        "spec":{"nodeName":"node-a","containers":[{"name":"main",
            "ports":[{"name":"http","containerPort":8080,"protocol":"TCP"}]}]},
        "status":{"phase":"Running","podIP":"10.0.0.5","podIPs":[{"ip":"10.0.0.5"}]}}"#;
    const NETPOL: &str = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
        "metadata":{"name":"web","namespace":"shop"},
        "spec":{"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Ingress"],
            "ingress":[{"ports":[{"port":"http"}]}]}}"#;

    #[test]
    fn json_objects_read_like_files() {
        let pod = parse_object_text("kubernetes:pods/shop/web-0", POD).unwrap();
        assert!(pod.1.is_none());
        let np = parse_object_text("kubernetes:networkpolicies/shop/web", NETPOL).unwrap();
        let file = np.1.as_ref().expect("a NetworkPolicy gives a policy file");
        assert_eq!(file.netpols.len(), 1);
        assert_eq!(file.netpols[0].name, "web");
        let (cluster, files) = objects_from_parts([Ok(pod), Ok(np)]).unwrap();
        let web = cluster.pod("shop", "web-0").unwrap();
        assert_eq!(
            web.ips,
            vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(web.node_name.as_deref(), Some("node-a"));
        assert_eq!(files.len(), 1);

        // The same objects as one file give the same cluster.
        let list =
            format!("{{\"kind\":\"List\",\"apiVersion\":\"v1\",\"items\":[{POD},{NETPOL}]}}");
        let (from_file, netpols) = parse_objects("objects.json", &list).unwrap();
        assert_eq!(from_file, cluster);
        assert_eq!(netpols.len(), 1);
    }

    #[test]
    fn a_bad_object_is_named_in_the_error() {
        let bad = POD.replace("10.0.0.5", "10.0.0.500");
        let err = objects_from_parts([
            parse_object_text("kubernetes:pods/shop/web-0", &bad),
            parse_object_text("kubernetes:networkpolicies/shop/web", NETPOL),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kubernetes:pods/shop/web-0"), "{text}");
    }
}
