//! The agent crate's layers and the direction its imports may go: each
//! top-level module of `agent/src` names the modules it may use. Any path
//! `crate::<module>` in a file counts, in `use` lines or inline.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

/// Top-level modules of the agent crate and what each may import.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("policy", &[]),
    ("bpffs", &[]),
    ("host", &[]),
    ("kube", &["policy"]),
    ("datapath", &["policy", "bpffs"]),
    ("telemetry", &["datapath", "bpffs", "policy"]),
    ("cli", &["policy", "datapath", "telemetry"]),
    ("config", &["cli", "policy"]),
    (
        "daemon",
        &[
            "cli",
            "policy",
            "bpffs",
            "host",
            "kube",
            "datapath",
            "telemetry",
        ],
    ),
    (
        "commands",
        &[
            "cli",
            "daemon",
            "policy",
            "bpffs",
            "host",
            "datapath",
            "telemetry",
        ],
    ),
];

/// One import that goes the wrong way.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` may not import `crate::{}` (allowed: {})",
            self.file.display(),
            self.line,
            self.from,
            self.to,
            allowed(&self.from)
                .map(|a| if a.is_empty() {
                    "nothing but agent_common".to_owned()
                } else {
                    a.join(", ")
                })
                .unwrap_or_default()
        )
    }
}

fn allowed(module: &str) -> Option<&'static [&'static str]> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, a)| *a)
}

/// The top-level module a file of `src` belongs to (`None` for the crate
/// roots, which may use everything).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The modules `crate::` paths in `text` name, with their line numbers.
/// `use crate::{a, b::c}` names `a` and `b`.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_group = false;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                in_group = true;
                rest = group;
                break;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name.clone()));
            rest = &after[name.len()..];
        }
        if in_group {
            // Inside `use crate::{ ... };`: every path begins with a module.
            let mut depth = 0i32;
            for part in rest.split_inclusive([',', '{', '}', ';']) {
                let name: String = part
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if depth == 0 && !name.is_empty() {
                    out.push((i + 1, name));
                }
                if part.ends_with('{') {
                    depth += 1;
                } else if part.ends_with('}') {
                    depth -= 1;
                    if depth < 0 {
                        in_group = false;
                        break;
                    }
                }
                if part.ends_with(';') {
                    in_group = false;
                    break;
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every import in `src` that goes against `LAYERS`.
pub fn violations(src: &Path) -> anyhow::Result<Vec<Violation>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    files.sort();
    let modules: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut out = Vec::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let Some(ok) = allowed(&from) else {
            bail!(
                "{}: top-level module `{from}` has no layer; add it to xtask's LAYERS",
                file.display()
            );
        };
        let text = std::fs::read_to_string(&file)?;
        for (line, to) in crate_refs(&text) {
            if to != from && modules.contains(to.as_str()) && !ok.contains(&to.as_str()) {
                out.push(Violation {
                    file: file.clone(),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    Ok(out)
}

pub fn check(src: &Path) -> anyhow::Result<()> {
    let bad = violations(src)?;
    for v in &bad {
        eprintln!("{v}");
    }
    if !bad.is_empty() {
        bail!("{} import(s) go against the layers", bad.len());
    }
    eprintln!("xtask: imports of {} follow the layers", src.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        crate_refs(text).into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn finds_paths_in_uses_groups_and_code() {
        assert_eq!(names("use crate::policy::Compiled;"), ["policy"]);
        assert_eq!(
            names("use crate::{\n    bpffs::{Pinned, X},\n    datapath::Y,\n};"),
            ["bpffs", "datapath"]
        );
        assert_eq!(
            names("let x = crate::telemetry::http::serve();"),
            ["telemetry"]
        );
        assert_eq!(names("// crate::daemon in a comment"), Vec::<String>::new());
    }

    #[test]
    fn an_import_against_the_layers_fails() {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        std::fs::create_dir_all(dir.join("datapath")).unwrap();
        std::fs::write(
            dir.join("datapath/mod.rs"),
            "use crate::policy::Compiled;\n",
        )
        .unwrap();
        assert!(violations(&dir).unwrap().is_empty());
        std::fs::write(
            dir.join("policy/mod.rs"),
            "use crate::{\n    datapath::Datapath,\n};\n",
        )
        .unwrap();
        let v = violations(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].from.as_str(), v[0].to.as_str(), v[0].line),
            ("policy", "datapath", 2)
        );
    }

    #[test]
    fn the_agent_follows_the_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
        let v = violations(&src).unwrap();
        assert!(v.is_empty(), "{v:?}");
    }
}
