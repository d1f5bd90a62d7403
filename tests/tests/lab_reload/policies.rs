//! The two policy variants swapped by the reload test, and a policy
//! directory rewritten atomically.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use netpol_tests::agent_bin;

#[derive(Clone)]
pub struct Variant {
    pub name: &'static str,
    /// (file name, contents), every file of the directory.
    pub files: Vec<(String, String)>,
}

impl Variant {
    pub fn file(&self, name: &str) -> &str {
        &self
            .files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("variant {} has no {name}", self.name))
            .1
    }

    fn with_file(&self, name: &'static str, file: &str, text: String) -> Variant {
        let mut v = self.clone();
        v.name = name;
        let slot = v
            .files
            .iter_mut()
            .find(|(n, _)| n == file)
            .unwrap_or_else(|| panic!("no {file} to replace"));
        slot.1 = text;
        v
    }
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr")
}

/// A: the LOCAL-PLUS example policy as it is.
pub fn variant_a() -> Variant {
    let mut files: Vec<(String, String)> = fs::read_dir(examples_dir())
        .expect("read examples/localplus-cidr")
        .map(|e| e.expect("examples entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|(n, _)| n == "services.yaml")
            && files.iter().any(|(n, _)| n == "platform.yaml"),
        "examples/localplus-cidr changed: services.yaml and platform.yaml expected, found {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    Variant { name: "A", files }
}

/// Appends a rule to a file whose last top-level key is `rules:`.
pub fn append_rule(text: &str, rule: &str) -> String {
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(rule);
    out
}

// Not a `\`-continued literal: that would strip the YAML indentation.
const MERCHANT_TO_WALLET: &str = concat!(
    "  # Variant B only: merchant calls wallet over gRPC.\n",
    "  - name: merchant-to-wallet\n",
    "    from: svc-merchant\n",
    "    to: svc-wallet\n",
    "    ports: [50051/tcp]\n",
);

/// B: A plus merchant -> wallet 50051/tcp, minus prometheus -> services
/// 8080/tcp. Gateway -> services, ledger -> wallet and DNS are in both.
pub fn variant_b(a: &Variant) -> Variant {
    let services = append_rule(a.file("services.yaml"), MERCHANT_TO_WALLET);
    let platform = a.file("platform.yaml");
    let mut kept = Vec::new();
    let mut skipping = false;
    let mut removed = false;
    for line in platform.lines() {
        if line.trim_start().starts_with("- name:") {
            skipping = line.trim() == "- name: prometheus-scrape";
            removed |= skipping;
        } else if skipping && !line.starts_with("    ") {
            skipping = false;
        }
        if !skipping {
            kept.push(line);
        }
    }
    assert!(
        removed,
        "examples/localplus-cidr/platform.yaml has no rule prometheus-scrape to drop for variant B"
    );
    let platform = kept.join("\n") + "\n";
    a.with_file("B", "services.yaml", services)
        .with_file("B", "platform.yaml", platform)
}

/// A policy directory under the temp dir, removed on drop.
pub struct PolicyDir {
    pub path: PathBuf,
}

impl PolicyDir {
    pub fn new(label: &str) -> PolicyDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "netpol-reload-{}-{}-{label}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        PolicyDir { path }
    }

    /// Writes each file to a dot-name (which the agent skips), then renames it
    /// over the real one, so a reader sees the old file or the new, never half.
    pub fn install(&self, files: &[(String, String)]) {
        for (name, text) in files {
            self.install_file(name, text);
        }
    }

    pub fn install_file(&self, name: &str, text: &str) {
        let tmp = self.path.join(format!(".{name}.tmp"));
        let dst = self.path.join(name);
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &dst)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), dst.display()));
    }
}

impl Drop for PolicyDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// `netpol-agent check` must accept the variant, so a rejected reload later
/// can only be the agent's fault.
pub fn assert_valid(v: &Variant) {
    let dir = PolicyDir::new(&format!("check-{}", v.name));
    dir.install(&v.files);
    let out = Command::new(agent_bin())
        .arg("check")
        .arg(&dir.path)
        .output()
        .expect("run netpol-agent check");
    assert!(
        out.status.success(),
        "variant {} does not pass `netpol-agent check`:\n{}{}",
        v.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
