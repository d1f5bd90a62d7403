//! The installs as kustomize renders them (`kubectl kustomize`), and the
//! pieces of a pod spec the checks read (its container, the settings it runs
//! with, capabilities).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{
    arr, assert_success, deploy, require_python, require_tool, run, s, yaml_docs_of,
};

/// The kustomizations an operator applies: the agent alone, LOCAL-PLUS's
/// overlay, and the cleanup DaemonSet.
pub const BASE: &str = "base";
pub const LOCALPLUS: &str = "overlays/localplus";
pub const UNINSTALL: &str = "uninstall";

/// kubectl with its built-in kustomize: on the development machines and CI
/// (Debian's kubernetes-client where the machine has none; `cargo xtask
/// setup`).
pub fn kubectl() -> Option<PathBuf> {
    let found = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none()
        && !require_tool(
            Path::new("/usr/bin/kubectl"),
            "run `cargo xtask setup` as root",
        )
    {
        return None;
    }
    found
}

/// One rendered install: every resource `kubectl apply -k deploy/DIR` sends.
pub struct Install {
    pub dir: &'static str,
    pub docs: Vec<Value>,
}

/// `kubectl kustomize deploy/DIR`, read as JSON values; None (a skip, or a
/// failure under CI=true) where kubectl or the YAML reader is missing.
pub fn render(dir: &'static str) -> Option<Install> {
    if !require_python() {
        return None;
    }
    let kubectl = kubectl()?;
    let out = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy().join(dir)));
    assert_success(&out, &format!("kubectl kustomize deploy/{dir}"));
    let docs = yaml_docs_of(&String::from_utf8_lossy(&out.stdout));
    assert!(!docs.is_empty(), "deploy/{dir} renders nothing");
    Some(Install { dir, docs })
}

/// The full LOCAL-PLUS install, which the DaemonSet checks read.
pub fn kustomization() -> Option<Install> {
    render(LOCALPLUS)
}

impl Install {
    /// The resource of `kind` (exactly one).
    pub fn resource(&self, kind: &str) -> Value {
        let found: Vec<&Value> = self.docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "exactly one {kind} in deploy/{}", self.dir);
        found[0].clone()
    }

    /// The ConfigMap whose name is `name`, or (generated ones) `name-HASH`.
    pub fn configmap(&self, name: &str) -> Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .filter(|d| {
                let n = d["metadata"]["name"].as_str().unwrap_or_default();
                n == name
                    || n.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('-'))
                        .is_some_and(|h| {
                            h.len() == 10 && h.bytes().all(|b| b.is_ascii_alphanumeric())
                        })
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one ConfigMap {name} in deploy/{}",
            self.dir
        );
        found[0].clone()
    }

    /// The agent's command line with the settings file it is pointed at
    /// (`--config PATH`, a ConfigMap key mounted with subPath) spelled out as
    /// the flags it stands for: each key a long flag of `run`, a list one
    /// flag per item, `true` a bare switch, `false` left out. The other
    /// checks read flags from this, so they hold whichever way a setting is
    /// given.
    pub fn agent_args(&self) -> Vec<String> {
        let ds = self.resource("DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let c = the_container(pod, "DaemonSet containers");
        let mut args = args_of(&c);
        let Some(path) = flag(&args, "--config").map(str::to_owned) else {
            return args;
        };
        args.retain(|a| a != "--config" && !a.starts_with("--config="));
        if let Some(i) = args.iter().position(|a| *a == path) {
            args.remove(i);
        }
        let (_, text) = self.mounted_file(pod, &c, &path);
        let settings = yaml_docs_of(&text);
        assert_eq!(settings.len(), 1, "{path}: one YAML document");
        let map = settings[0]
            .as_object()
            .unwrap_or_else(|| panic!("{path}: a mapping of flag names"));
        for (key, value) in map {
            let items = match value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for item in items {
                match item {
                    Value::Bool(true) => args.push(format!("--{key}")),
                    Value::Bool(false) => {}
                    Value::String(v) => args.push(format!("--{key}={v}")),
                    Value::Number(n) => args.push(format!("--{key}={n}")),
                    other => panic!("{path}: {key}: unexpected value {other}"),
                }
            }
        }
        args
    }

    /// The ConfigMap and the text of the key mounted at `path` in container
    /// `c` (a subPath mount of a ConfigMap volume).
    pub fn mounted_file(&self, pod: &Value, c: &Value, path: &str) -> (Value, String) {
        let mount = arr(&c["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
            .clone();
        let key = s(&mount["subPath"], "the settings mount's subPath").to_owned();
        let volume = arr(&pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
            .clone();
        let name = s(&volume["configMap"]["name"], "a ConfigMap volume").to_owned();
        let cm = self
            .docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("the volume names ConfigMap {name}, which is not rendered"))
            .clone();
        let text = s(&cm["data"][&key], "the settings key").to_owned();
        (cm, text)
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
    flags(args, name).into_iter().next()
}

/// Every value of a repeatable flag.
pub fn flags<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    let eq = format!("{name}=");
    args.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            if let Some(v) = a.strip_prefix(&eq) {
                Some(v)
            } else if a == name {
                args.get(i + 1).map(String::as_str)
            } else {
                None
            }
        })
        .collect()
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
