//! deploy/kustomization.yaml and what it refers to, and the pieces of a pod
//! spec the checks read (its container, arguments, capabilities).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{arr, deploy, read, s, yaml_doc, yaml_docs};

/// deploy/kustomization.yaml and what it refers to.
pub struct Kustomization {
    pub doc: Value,
    pub resources: Vec<PathBuf>,
}

pub fn kustomization() -> Kustomization {
    let doc = yaml_doc(&deploy().join("kustomization.yaml"));
    let resources = arr(&doc["resources"], "kustomization.yaml: resources")
        .iter()
        .map(|r| deploy().join(s(r, "kustomization.yaml: resources[]")))
        .collect();
    Kustomization { doc, resources }
}

impl Kustomization {
    pub fn generator(&self) -> &Value {
        let gens = arr(
            &self.doc["configMapGenerator"],
            "kustomization.yaml: configMapGenerator",
        );
        assert_eq!(gens.len(), 1, "one ConfigMap generator (the policy)");
        &gens[0]
    }

    /// The ConfigMap kustomize generates, as kustomize writes it.
    pub fn policy_configmap(&self) -> Value {
        let gen = self.generator();
        let mut data = serde_json::Map::new();
        for f in arr(&gen["files"], "configMapGenerator[0].files") {
            let rel = s(f, "configMapGenerator[0].files[]");
            let key = Path::new(rel).file_name().unwrap().to_string_lossy();
            data.insert(key.into_owned(), Value::String(read(&deploy().join(rel))));
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": gen["name"],
                "namespace": self.doc["namespace"],
                "labels": gen["options"]["labels"],
            },
            "data": data,
        })
    }

    /// The resource of `kind` (exactly one).
    pub fn resource(&self, kind: &str) -> Value {
        let found: Vec<Value> = self
            .resources
            .iter()
            .flat_map(|p| yaml_docs(p))
            .filter(|d| d["kind"] == kind)
            .collect();
        assert_eq!(found.len(), 1, "exactly one {kind} in deploy/");
        found.into_iter().next().unwrap()
    }
}

pub fn the_container(pod_spec: &Value, what: &str) -> Value {
    let containers = arr(&pod_spec["containers"], what);
    assert_eq!(containers.len(), 1, "{what}: one container");
    containers[0].clone()
}

pub fn args_of(container: &Value) -> Vec<String> {
    arr(&container["args"], "container args")
        .iter()
        .map(|a| s(a, "container args[]").to_owned())
        .collect()
}

/// The value of `--flag=value` or `--flag value` in `args`.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&eq) {
            Some(v)
        } else if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

pub const CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

pub fn capabilities_added(container: &Value) -> BTreeSet<String> {
    arr(
        &container["securityContext"]["capabilities"]["add"],
        "securityContext.capabilities.add",
    )
    .iter()
    .map(|c| s(c, "capabilities.add[]").to_owned())
    .collect()
}
