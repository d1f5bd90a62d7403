//! Reading a policy directory and merging its files into one `Policy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::cluster::{merge_clusters, parse_objects, pods_group, resolve, Cluster};
use super::error::{Origin, PolicyError, PolicyErrors};
use super::model::{Peer, Policy, PolicyFile};
use super::parse::{parse_str, Ctx};
use super::source::{self, ReadLimits};
use super::suggest::did_you_mean;

const POLICY_EXTENSIONS: &[&str] = &[".yaml", ".yml"];
/// JSON is YAML.
const OBJECT_EXTENSIONS: &[&str] = &[".yaml", ".yml", ".json"];

/// Reads and parses one file, without merging; errors name it by `path` as given.
pub fn read_file(path: &Path, limits: &ReadLimits) -> Result<PolicyFile, PolicyErrors> {
    let text = source::read_file(path, limits)?;
    parse_str(&path.display().to_string(), &text)
}

/// Loads one file as a whole policy (its rules may name only its own groups).
pub fn load_file(path: &Path, limits: &ReadLimits) -> Result<Policy, PolicyErrors> {
    merge(vec![read_file(path, limits)?])
}

/// The policy files of `dir`: `*.yaml` and `*.yml`, sorted by name, not
/// recursive. Names starting with '.' are skipped: editors' temporary files and
/// the `..data` / `..2024_01_01` entries Kubernetes uses to swap a ConfigMap's
/// contents atomically (the visible names are symlinks through `..data`, read
/// from the one generation `..data` points to).
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    Ok(source::list(dir, POLICY_EXTENSIONS)?
        .into_iter()
        .map(|e| PathBuf::from(e.name))
        .collect())
}

/// The Kubernetes object files of `dir`: `*.yaml`, `*.yml` and `*.json`
/// (JSON is YAML), under the same rules as `policy_files`.
pub fn object_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    Ok(source::list(dir, OBJECT_EXTENSIONS)?
        .into_iter()
        .map(|e| PathBuf::from(e.name))
        .collect())
}

/// Reads and parses every policy file of `dir`, collecting the errors of all.
fn read_policy_dir(
    dir: &Path,
    limits: &ReadLimits,
    errors: &mut Vec<PolicyError>,
) -> Result<Vec<PolicyFile>, PolicyErrors> {
    let read = source::read_dir(dir, POLICY_EXTENSIONS, limits)?;
    errors.extend(read.errors);
    let mut files = Vec::new();
    for t in read.texts {
        match parse_str(&t.name, &t.text) {
            Ok(f) => files.push(f),
            Err(e) => errors.extend(e.0),
        }
    }
    Ok(files)
}

/// Loads and merges every policy file of `dir`, reporting the errors of all
/// files at once. A directory without policy files is an empty policy, which
/// denies all workload traffic.
pub fn load_dir(dir: &Path, limits: &ReadLimits) -> Result<Policy, PolicyErrors> {
    let mut errors = Vec::new();
    let files = read_policy_dir(dir, limits, &mut errors)?;
    // Cross-file checks would only repeat errors about what failed to parse.
    PolicyErrors::check(errors)?;
    merge(files)
}

/// Merges parsed files in the given order, checking that group and rule names
/// are unique across them and that rules name only defined groups.
pub fn merge(files: Vec<PolicyFile>) -> Result<Policy, PolicyErrors> {
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    let mut group_at: HashMap<String, Option<Origin>> = HashMap::new();
    let mut rule_at: HashMap<String, Option<Origin>> = HashMap::new();
    for file in files {
        policy.enforce_host |= file.enforce_host;
        for g in file.groups {
            if let Some(first) = group_at.get(&g.name) {
                errors.push(duplicate(
                    "group",
                    &g.name,
                    g.origin.as_ref(),
                    first.as_ref(),
                ));
                continue;
            }
            group_at.insert(g.name.clone(), g.origin.clone());
            policy.groups.push(g);
        }
        for r in file.rules {
            let at = r.origin.as_ref().map(|o| o.rule.clone());
            if let Some(first) = rule_at.get(&r.name) {
                errors.push(duplicate("rule", &r.name, at.as_ref(), first.as_ref()));
                continue;
            }
            rule_at.insert(r.name.clone(), at);
            policy.rules.push(r);
        }
    }
    for r in &policy.rules {
        let origins = r.origin.as_ref();
        let from = r
            .from
            .iter()
            .zip(origins.map(|o| &o.from[..]).unwrap_or(&[]));
        let to = r.to.iter().zip(origins.map(|o| &o.to[..]).unwrap_or(&[]));
        // `within` lists its peers on both sides: report each once.
        let peers: Vec<_> = if r.within {
            from.collect()
        } else {
            from.chain(to).collect()
        };
        for (peer, origin) in peers {
            let Peer::Group(name) = peer else { continue };
            if group_at.contains_key(name) {
                continue;
            }
            let mut msg = format!("unknown group {name:?}");
            msg += &did_you_mean(name, group_at.keys().map(String::as_str));
            if name.contains(':') || name.chars().all(|c| c.is_ascii_digit() || c == '.') {
                msg += " (and not a valid IP address or CIDR)";
            }
            errors.push(PolicyError::at(origin, msg));
        }
    }
    PolicyErrors::check(errors)?;
    Ok(policy)
}

fn duplicate(kind: &str, name: &str, at: Option<&Origin>, first: Option<&Origin>) -> PolicyError {
    let first = first.map_or_else(|| "before".to_string(), |o| format!("at {o}"));
    let msg = format!("{kind} {name:?} is already defined {first}");
    match at {
        Some(o) => PolicyError::at(o, msg),
        None => PolicyError::file("", msg),
    }
}

/// The Kubernetes objects of `dir` (Namespaces, Pods) and the NetworkPolicies
/// among them, as policy files. Every file's errors are reported at once.
pub fn load_objects(
    dir: &Path,
    limits: &ReadLimits,
) -> Result<(Cluster, Vec<PolicyFile>), PolicyErrors> {
    let mut clusters = Vec::new();
    let mut files = Vec::new();
    let read = source::read_dir(dir, OBJECT_EXTENSIONS, limits)?;
    let mut errors = read.errors;
    for source::Text { name, text } in read.texts {
        match parse_objects(&name, &text) {
            Ok((cluster, netpols)) => {
                clusters.push(cluster);
                if netpols.is_empty() {
                    continue;
                }
                let mut cx = Ctx::new(&name);
                for doc in &netpols {
                    cx.read_document(doc);
                }
                let (file, errs) = cx.take();
                errors.extend(errs);
                files.push(file);
            }
            Err(e) => errors.extend(e.0),
        }
    }
    PolicyErrors::check(errors)?;
    Ok((merge_clusters(clusters), files))
}

/// A policy directory with the workloads of a Kubernetes objects directory:
/// NetworkPolicies of both are merged, selector groups take the addresses of
/// the pods they select, and pod addresses are never `world`.
pub fn load_dir_with_objects(
    dir: &Path,
    objects: &Path,
    limits: &ReadLimits,
) -> Result<(Policy, Cluster), PolicyErrors> {
    let mut errors = Vec::new();
    let mut files = read_policy_dir(dir, limits, &mut errors)?;
    let cluster = match load_objects(objects, limits) {
        Ok((cluster, netpols)) => {
            files.extend(netpols);
            cluster
        }
        Err(e) => {
            errors.extend(e.0);
            Cluster::default()
        }
    };
    PolicyErrors::check(errors)?;
    let mut policy = merge(files)?;
    with_cluster(&mut policy, &cluster);
    Ok((policy, cluster))
}

/// Resolves `policy`'s selector groups against `cluster` and adds the group
/// of every pod address.
pub fn with_cluster(policy: &mut Policy, cluster: &Cluster) {
    resolve(policy, cluster);
    policy.groups.push(pods_group(cluster));
}
