//! Reading a policy directory and merging its files into one `Policy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::api_objects::objects_from_parts;
use super::cluster::{Cluster, PODS_GROUP};
use super::error::{Origin, PolicyError, PolicyErrors};
use super::model::{Group, GroupSelector, Peer, Policy, PolicyFile};
use super::object_cache::ObjectCache;
use super::parse::parse_partial;
use super::selection::{every_pod, Selections};
use super::source::{self, ReadLimits};
use super::suggest::did_you_mean;

/// Reads and parses one file, without merging; errors name it by `path` as given.
pub fn read_file(path: &Path, limits: &ReadLimits) -> Result<PolicyFile, PolicyErrors> {
    read_file_with(path, false, limits)
}

/// `read_file`; with `kube`, NetworkPolicies keep their selectors (as
/// `parse_str_with` reads them).
pub fn read_file_with(
    path: &Path,
    kube: bool,
    limits: &ReadLimits,
) -> Result<PolicyFile, PolicyErrors> {
    let text = source::read_file(path, limits)?;
    let (file, errors) = parse_partial(&path.display().to_string(), &text, kube);
    PolicyErrors::check(errors)?;
    // Only invalid YAML leaves no file, and that is an error.
    Ok(file.unwrap_or_default())
}

/// The extensions of the files `run` reads from a policy directory.
pub const POLICY_EXTENSIONS: [&str; 2] = [".yaml", ".yml"];
/// JSON is YAML.
const OBJECT_EXTENSIONS: &[&str] = &[".yaml", ".yml", ".json"];

/// Whether `run` reads a file of this name from a policy directory (see
/// `policy_files`).
pub fn is_policy_file_name(name: &str) -> bool {
    !name.starts_with('.') && POLICY_EXTENSIONS.iter().any(|e| name.ends_with(e))
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
    Ok(source::list(dir, &POLICY_EXTENSIONS)?
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

/// Loads and merges every policy file of `dir`, reporting the errors of all
/// files at once. A directory without policy files is an empty policy, which
/// denies all workload traffic.
pub fn load_dir(dir: &Path, limits: &ReadLimits) -> Result<Policy, PolicyErrors> {
    load_sources(&read_sources(dir, limits)?)
}

/// The policy files of a directory as read (one bounded read of one
/// ConfigMap generation), not parsed yet: `run` keeps the last good ones on
/// the node's disk and can compile them again without the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// (name errors give the file, its text), sorted by name.
    pub files: Vec<(String, String)>,
    /// Files that could not be read: a policy with them is rejected.
    errors: Vec<PolicyError>,
}

impl Sources {
    /// Files kept earlier (their names as they were read).
    pub fn from_files(files: Vec<(String, String)>) -> Self {
        Self {
            files,
            errors: Vec::new(),
        }
    }

    /// Every file of the directory was read.
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Reads the policy files of `dir` without parsing them.
pub fn read_sources(dir: &Path, limits: &ReadLimits) -> Result<Sources, PolicyErrors> {
    let read = source::read_dir(dir, &POLICY_EXTENSIONS, limits)?;
    Ok(Sources {
        files: read.texts.into_iter().map(|t| (t.name, t.text)).collect(),
        errors: read.errors,
    })
}

/// `load_dir` of files already read.
pub fn load_sources(sources: &Sources) -> Result<Policy, PolicyErrors> {
    parse_sources(sources, false).merge(Vec::new())
}

/// A directory's policy files, each parsed as far as it goes.
struct ReadFiles {
    files: Vec<PolicyFile>,
    errors: Vec<PolicyError>,
    /// Some file could not be read or is not YAML: the groups it defines are
    /// unknown.
    opaque: bool,
}

fn parse_sources(sources: &Sources, kube: bool) -> ReadFiles {
    let mut read = ReadFiles {
        files: Vec::new(),
        opaque: !sources.errors.is_empty(),
        errors: sources.errors.clone(),
    };
    for (name, text) in &sources.files {
        let (file, errors) = parse_partial(name, text, kube);
        read.errors.extend(errors);
        match file {
            Some(f) => read.files.push(f),
            None => read.opaque = true,
        }
    }
    read
}

impl ReadFiles {
    /// Merges what parsed (then `more`) and reports every error at once: the
    /// files' own, then the cross-file ones. Errors about what failed to parse
    /// cannot be repeated (a rule with an error is left out, a group is kept
    /// by name), but an unknown group is not reported while a file that could
    /// not be parsed at all might define it.
    fn merge(mut self, more: Vec<PolicyFile>) -> Result<Policy, PolicyErrors> {
        self.files.extend(more);
        let (policy, duplicates, unknown) = merge_parts(self.files);
        self.errors.extend(duplicates);
        if !self.opaque {
            self.errors.extend(unknown);
        }
        PolicyErrors::check(self.errors)?;
        Ok(policy)
    }
}

/// Merges parsed files in the given order, checking that group and rule names
/// are unique across them and that rules name only defined groups.
pub fn merge(files: Vec<PolicyFile>) -> Result<Policy, PolicyErrors> {
    let (policy, mut errors, unknown) = merge_parts(files);
    errors.extend(unknown);
    PolicyErrors::check(errors)?;
    Ok(policy)
}

/// `merge`, with its errors apart: duplicate names, and unknown groups.
fn merge_parts(files: Vec<PolicyFile>) -> (Policy, Vec<PolicyError>, Vec<PolicyError>) {
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    let mut group_at: HashMap<String, Option<Origin>> = HashMap::new();
    let mut rule_at: HashMap<String, Option<Origin>> = HashMap::new();
    let mut netpol_at: HashMap<String, Origin> = HashMap::new();
    for file in files {
        policy.enforce_host |= file.enforce_host;
        for np in file.netpols {
            let key = format!("{}/{}", np.namespace, np.name);
            if let Some(first) = netpol_at.get(&key) {
                let msg = format!("NetworkPolicy {key} is already defined at {first}");
                errors.push(PolicyError::at(&np.origin, msg));
                continue;
            }
            netpol_at.insert(key, np.origin.clone());
            policy.netpols.push(np);
        }
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
            unknown.push(PolicyError::at(origin, msg));
        }
    }
    (policy, errors, unknown)
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
    load_objects_cached(dir, limits, &mut ObjectCache::default())
}

/// `load_objects`, parsing only the files whose text changed since `cache`
/// last saw them.
pub fn load_objects_cached(
    dir: &Path,
    limits: &ReadLimits,
    cache: &mut ObjectCache,
) -> Result<(Cluster, Vec<PolicyFile>), PolicyErrors> {
    let read = source::read_dir(dir, OBJECT_EXTENSIONS, limits)?;
    cache.keep_only(read.texts.iter().map(|t| t.name.as_str()));
    let mut errors = read.errors;
    let parts = read
        .texts
        .into_iter()
        .map(|source::Text { name, text }| cache.parse(&name, text))
        .collect::<Vec<_>>();
    let parsed = objects_from_parts(parts);
    match parsed {
        Ok(loaded) if errors.is_empty() => Ok(loaded),
        Ok(_) => Err(PolicyErrors(errors)),
        Err(e) => {
            errors.extend(e.0);
            Err(PolicyErrors(errors))
        }
    }
}

/// The objects of one file's text (named `name` in errors): Namespaces and
/// Pods, and the NetworkPolicies among them as a policy file.
pub fn objects_from_str(
    name: &str,
    text: &str,
) -> Result<(Cluster, Vec<PolicyFile>), PolicyErrors> {
    let (cluster, file) = super::api_objects::parse_object_text(name, text)?;
    Ok((cluster, file.into_iter().collect()))
}

/// A policy directory with workloads and NetworkPolicies already read (from
/// the API server): the same merge and resolution as `load_dir_with_objects`.
pub fn load_dir_with_cluster(
    dir: &Path,
    cluster: Cluster,
    netpols: Vec<PolicyFile>,
    limits: &ReadLimits,
) -> Result<(Policy, Cluster), PolicyErrors> {
    load_sources_with_cluster(&read_sources(dir, limits)?, cluster, netpols)
}

/// `load_dir_with_cluster` of files already read.
pub fn load_sources_with_cluster(
    sources: &Sources,
    cluster: Cluster,
    netpols: Vec<PolicyFile>,
) -> Result<(Policy, Cluster), PolicyErrors> {
    load_sources_with_cluster_cached(sources, cluster, netpols, &mut Selections::default())
}

/// `load_sources_with_cluster`, with the selectors' pods kept in
/// `selections` from one call to the next.
pub fn load_sources_with_cluster_cached(
    sources: &Sources,
    cluster: Cluster,
    netpols: Vec<PolicyFile>,
    selections: &mut Selections,
) -> Result<(Policy, Cluster), PolicyErrors> {
    let read = parse_sources(sources, true);
    let mut policy = read.merge(netpols)?;
    with_cluster_cached(&mut policy, &cluster, selections);
    Ok((policy, cluster))
}

/// A policy directory with the workloads of a Kubernetes objects directory:
/// NetworkPolicies of both are merged, selector groups take the addresses of
/// the pods they select, and pod addresses are never `world`.
pub fn load_dir_with_objects(
    dir: &Path,
    objects: &Path,
    limits: &ReadLimits,
) -> Result<(Policy, Cluster), PolicyErrors> {
    load_sources_with_objects(&read_sources(dir, limits)?, objects, limits)
}

/// `load_dir_with_objects` of policy files already read.
pub fn load_sources_with_objects(
    sources: &Sources,
    objects: &Path,
    limits: &ReadLimits,
) -> Result<(Policy, Cluster), PolicyErrors> {
    load_sources_with_objects_cached(
        sources,
        objects,
        limits,
        &mut ObjectCache::default(),
        &mut Selections::default(),
    )
}

/// `load_sources_with_objects`, parsing only the object files whose text
/// changed since `cache` last saw them, and matching against the selectors
/// only the pods that changed since `selections` last saw them.
pub fn load_sources_with_objects_cached(
    sources: &Sources,
    objects: &Path,
    limits: &ReadLimits,
    cache: &mut ObjectCache,
    selections: &mut Selections,
) -> Result<(Policy, Cluster), PolicyErrors> {
    let mut read = parse_sources(sources, true);
    // The groups a NetworkPolicy makes are named by its own rules only, so
    // objects that fail to load hide no group a policy file could name.
    let (cluster, netpols) = match load_objects_cached(objects, limits, cache) {
        Ok(loaded) => loaded,
        Err(e) => {
            read.errors.extend(e.0);
            (Cluster::default(), Vec::new())
        }
    };
    let mut policy = read.merge(netpols)?;
    with_cluster_cached(&mut policy, &cluster, selections);
    Ok((policy, cluster))
}

/// Resolves `policy`'s selector groups against `cluster` and adds the group
/// of every pod address.
pub fn with_cluster(policy: &mut Policy, cluster: &Cluster) {
    with_cluster_cached(policy, cluster, &mut Selections::default());
}

/// `with_cluster`, matching against the selectors only the pods that
/// changed since `selections` last saw the cluster.
pub fn with_cluster_cached(policy: &mut Policy, cluster: &Cluster, selections: &mut Selections) {
    let netpols = std::mem::take(&mut policy.netpols);
    let mut wanted: Vec<GroupSelector> = policy
        .groups
        .iter()
        .filter_map(|g| g.selector.clone())
        .collect();
    wanted.push(every_pod());
    wanted.extend(super::netpol::selectors(&netpols));
    selections.sync(cluster, &wanted);
    for g in &mut policy.groups {
        if let Some(sel) = &g.selector {
            g.cidrs = selections.addresses(sel);
            g.except.clear();
        }
    }
    let all = selections.addresses(&every_pod());
    policy.groups.push(Group::new(PODS_GROUP, &all, &[]));
    super::netpol::lower(policy, &netpols, cluster, selections);
    policy.netpols = netpols;
}
