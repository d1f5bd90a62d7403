//! What the checks stand on: the repository's paths and versions, the tools
//! they need (missing: a skip, or a failure under CI=true), commands, YAML
//! read as JSON, temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use netpol_tests::netns::unique_suffix;
use serde_json::Value;

use crate::VENV;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

pub fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// The example policy written by namespace and labels (workload identity),
/// which deploy/overlays/localplus ships, and the one written by address
/// ranges, which the lab enforces without Kubernetes objects. Found by what
/// they hold, not by directory name, among examples/localplus*.
pub fn example_policy(by_namespace: bool) -> PathBuf {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).expect("examples/") {
        let dir = entry.expect("examples/ entry").path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.is_dir() || !name.starts_with("localplus") {
            continue;
        }
        let groups = dir.join("groups.yaml");
        if groups.is_file() && read(&groups).contains("namespace:") == by_namespace {
            found.push(dir);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one examples/localplus* policy written {}: {found:?}",
        if by_namespace {
            "by namespace"
        } else {
            "by address"
        }
    );
    found.remove(0)
}

/// The policy files (*.yaml) of a directory, by file name.
pub fn policy_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// True when `tool` exists. Off CI a missing tool skips with a notice; under
/// CI=true it fails, so a machine without it cannot pass silently.
pub fn require_tool(tool: &Path, install: &str) -> bool {
    if tool.exists() {
        return true;
    }
    let msg = format!("{} is missing: {install}", tool.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true, so this fails instead of skipping)");
    }
    eprintln!("skipping: {msg}");
    false
}

fn python() -> PathBuf {
    PathBuf::from(VENV).join("bin/python")
}

pub fn require_python() -> bool {
    require_tool(&python(), "run `cargo xtask setup` as root")
}

pub fn ruby() -> Option<PathBuf> {
    let found = ["/usr/bin/ruby", "/usr/local/bin/ruby"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        require_tool(
            Path::new("/usr/bin/ruby"),
            "run `cargo xtask setup` as root",
        );
    }
    found
}

pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every YAML document of a file, as JSON values (PyYAML's safe loader, so
/// the YAML 1.1 rules kubectl uses apply).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = run(Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         print(json.dumps(docs))",
        ])
        .arg(path));
    assert_success(&out, &format!("reading {} as YAML", path.display()));
    match serde_json::from_slice(&out.stdout).expect("JSON from the YAML reader") {
        Value::Array(docs) => docs,
        other => panic!("unexpected YAML reader output {other}"),
    }
}

/// Every YAML document of `text` (what `kubectl kustomize` prints, a
/// ConfigMap's key), as JSON values, read the same way as `yaml_docs`.
pub fn yaml_docs_of(text: &str) -> Vec<Value> {
    let tmp = TempDir::new("yaml");
    let path = tmp.0.join("docs.yaml");
    std::fs::write(&path, text).expect("write YAML");
    yaml_docs(&path)
}

pub fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v}"))
}

pub fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {v}"))
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netpol-{label}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn workspace_version() -> String {
    let manifest = read(&repo().join("Cargo.toml"));
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && line.starts_with("version") {
            return line.split('"').nth(1).expect("quoted version").to_owned();
        }
    }
    panic!("no version in [workspace.package] of Cargo.toml");
}

pub fn rust_toolchain() -> String {
    read(&repo().join("rust-toolchain.toml"))
        .lines()
        .find(|l| l.trim_start().starts_with("channel"))
        .and_then(|l| l.split('"').nth(1))
        .expect("channel in rust-toolchain.toml")
        .to_owned()
}
