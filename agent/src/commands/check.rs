//! `netpol-agent check`: validate and show what a policy compiles to, without
//! privileges or a kernel: groups, identities, rules with their entry counts,
//! map sizes against their limits. It answers what `run` would do with the
//! same flags: it reads the same files, reports every error of a directory
//! in one pass, and exits with 2 whenever `run` would refuse the policy (too
//! big for the maps, or a lockout no --allow-* flag overrides).
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::output;
use crate::{
    cli::{CheckArgs, OutputFormat, UsageError, WouldRefuse},
    policy::{
        self, Cluster, CompileOptions, Compiled, LockoutKind, MapLimits, Peer, Policy, PolicyErrors,
    },
};

/// A policy directory, or a single file (whose rules may name only its
/// groups), with the workloads of a Kubernetes objects directory if given.
pub fn load(
    path: &Path,
    objects: Option<&Path>,
    limits: &policy::ReadLimits,
) -> Result<(Policy, Cluster), policy::PolicyErrors> {
    match objects {
        Some(objects) if path.is_dir() => policy::load_dir_with_objects(path, objects, limits),
        Some(objects) => {
            let (cluster, netpols) = policy::load_objects(objects, limits)?;
            let mut files = vec![policy::read_file_with(path, true, limits)?];
            files.extend(netpols);
            let mut p = policy::merge(files)?;
            policy::with_cluster(&mut p, &cluster);
            Ok((p, cluster))
        }
        None if path.is_dir() => Ok((policy::load_dir(path, limits)?, Cluster::default())),
        None => Ok((policy::load_file(path, limits)?, Cluster::default())),
    }
}

/// A single file is checked only if `run` would read it from a policy
/// directory: passing `check` must mean the policy is enforced.
pub fn readable_by_run(path: &Path) -> Result<(), UsageError> {
    // A directory, or a path that does not exist (reading it says so).
    if !path.is_file() {
        return Ok(());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if policy::is_policy_file_name(name) {
        return Ok(());
    }
    let why = if name.starts_with('.') {
        "it skips names starting with '.'"
    } else {
        "it reads only *.yaml and *.yml files"
    };
    Err(UsageError(format!(
        "{}: run would not read this file from a policy directory ({why}); rename it",
        path.display()
    )))
}

pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let path = args.path();
    let name = path.display().to_string();
    let format = args.output.format();
    readable_by_run(path)?;
    let policy = match load(path, args.kube_objects.as_deref(), &args.read.limits()) {
        Ok((policy, _)) => policy,
        Err(errors) => {
            // Scripts asked for a document: they get one with the errors (and
            // the errors go to stderr as well, as always).
            if format != OutputFormat::Table {
                print!(
                    "{}",
                    output::render(format, &CheckDoc::invalid(&name, &errors), |_| String::new(
                    ))?
                );
            }
            return Err(errors.into());
        }
    };
    let opts = CompileOptions {
        host_addrs: args.host_addr.clone(),
        enforce_host: args.enforce_host,
        node_cidrs: args.node_cidr.clone(),
    };
    let compiled = policy::compile(&policy, &opts).context("compiling")?;
    let doc = CheckDoc::new(&name, &policy, &compiled, &opts, args);
    print!(
        "{}",
        output::render(format, &doc, |d| report(
            d,
            &policy,
            &compiled,
            &args.limits()
        ))?
    );
    if doc.valid {
        return Ok(());
    }
    Err(WouldRefuse {
        path: name,
        reasons: doc.errors.into_iter().map(|e| e.message).collect(),
    }
    .into())
}

/// What `check -o json|yaml` prints: everything the table shows, and the
/// verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckDoc {
    /// The directory or file, as given.
    pub path: String,
    /// `run` would enforce the policy with the same flags.
    pub valid: bool,
    pub groups: Vec<GroupDoc>,
    pub identities: Vec<IdentityDoc>,
    /// Rule ids in order, the policy's then the built-in ones.
    pub rules: Vec<RuleDoc>,
    pub maps: Vec<MapDoc>,
    /// What `run` would refuse to enforce (cut off the workloads or the
    /// node), and whether a flag allows it.
    pub lockout: Vec<LockoutDoc>,
    pub warnings: Vec<String>,
    /// Why `run` would refuse the policy: the files' errors (with
    /// positions), or the maps it does not fit and the lockouts not allowed.
    pub errors: Vec<ErrorDoc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDoc {
    pub name: String,
    pub cidrs: Vec<String>,
    pub except: Vec<String>,
    /// A selector group's namespaces and pods; its cidrs are theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    pub audit: bool,
    /// Some rule names it.
    pub used: bool,
    /// FILE:LINE:COLUMN where it is defined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IdentityDoc {
    pub id: u32,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleDoc {
    pub id: u32,
    pub name: String,
    /// `from a to b ports 443/tcp`, or `within a, b`.
    pub summary: String,
    /// Map entries credited to it (0 when earlier rules cover all it allows).
    pub entries: usize,
    /// Of those, entries that refuse what the rule would otherwise allow
    /// (`builtin:host-ingress`: encapsulation from outside `nodes`).
    pub refusing: usize,
    pub audit: bool,
    /// Added by the agent (the node's own traffic), not by a file.
    pub builtin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapDoc {
    pub map: String,
    pub used: usize,
    pub limit: u32,
    /// The `run` flag that sets the limit.
    pub flag: String,
    pub fits: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockoutDoc {
    /// `empty-policy` or `host`.
    pub kind: String,
    pub message: String,
    /// The flag that allows it.
    pub flag: String,
    /// The flag was given.
    pub allowed: bool,
}

/// One error: a policy file's (with its position) or a reason `run` would
/// refuse the policy (message only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl ErrorDoc {
    fn message(message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }
}

impl CheckDoc {
    /// A policy whose files have errors.
    pub fn invalid(path: &str, errors: &PolicyErrors) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let errors = errors
            .iter()
            .map(|e| ErrorDoc {
                file: some(&e.file),
                line: (e.line > 0).then_some(e.line),
                column: (e.line > 0).then_some(e.column),
                field: some(&e.field),
                message: e.message.clone(),
            })
            .collect();
        Self {
            path: path.to_string(),
            valid: false,
            groups: Vec::new(),
            identities: Vec::new(),
            rules: Vec::new(),
            maps: Vec::new(),
            lockout: Vec::new(),
            warnings: Vec::new(),
            errors,
        }
    }

    /// A policy that compiled, judged as `run` would judge it with `args`.
    pub fn new(
        path: &str,
        policy: &Policy,
        compiled: &Compiled,
        opts: &CompileOptions,
        args: &CheckArgs,
    ) -> Self {
        let limits = args.limits();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        // The same checks, in the same order, as `run` makes before it
        // touches the kernel (daemon::policy_dir::compile_dir).
        if let Err(e) = policy::check_capacity(compiled, &limits) {
            errors.push(ErrorDoc::message(e.to_string()));
        }
        let mut lockout = Vec::new();
        for p in policy::lockout_findings(policy, compiled, opts) {
            let allowed = match p.kind {
                LockoutKind::EmptyPolicy => args.allow_empty_policy,
                LockoutKind::Host => args.allow_host_lockout,
            };
            if allowed {
                warnings.push(format!("allowed by {}: {}", p.kind.flag(), p.message));
            } else {
                errors.push(ErrorDoc::message(p.message.clone()));
            }
            lockout.push(LockoutDoc {
                kind: match p.kind {
                    LockoutKind::EmptyPolicy => "empty-policy",
                    LockoutKind::Host => "host",
                }
                .into(),
                message: p.message,
                flag: p.kind.flag().into(),
                allowed,
            });
        }
        if policy::enforces_host(policy, opts) && opts.host_addrs.is_empty() {
            warnings.push(
                "the host is enforced but the node's addresses are not known: give them with \
                 --host-addr to check that the node is not cut off"
                    .into(),
            );
        }
        let used = used_groups(policy);
        let groups: Vec<GroupDoc> = policy
            .groups
            .iter()
            .map(|g| GroupDoc {
                name: g.name.clone(),
                cidrs: g.cidrs.iter().map(ToString::to_string).collect(),
                except: g.except.iter().map(ToString::to_string).collect(),
                selector: g.selector.as_ref().map(ToString::to_string),
                audit: g.audit,
                used: used.contains(g.name.as_str()),
                origin: g.origin.as_ref().map(ToString::to_string),
            })
            .collect();
        for g in &policy.groups {
            if !used.contains(g.name.as_str()) && reported_when_unused(g) {
                let at = g
                    .origin
                    .as_ref()
                    .map_or_else(String::new, |o| format!(" ({o})"));
                warnings.push(format!(
                    "group {:?}{at} is named by no rule: it only keeps its addresses out of world",
                    g.name
                ));
            }
        }
        Self {
            path: path.to_string(),
            valid: errors.is_empty(),
            groups,
            identities: compiled
                .identities
                .iter()
                .map(|i| IdentityDoc {
                    id: i.id,
                    groups: i.groups.to_vec(),
                })
                .collect(),
            rules: rule_docs(policy, compiled),
            maps: policy::map_usage(compiled, &limits)
                .into_iter()
                .map(|u| MapDoc {
                    fits: u.fits(),
                    map: u.what.into(),
                    used: u.used,
                    limit: u.limit,
                    flag: format!("--{}", u.flag),
                })
                .collect(),
            lockout,
            warnings,
            errors,
        }
    }
}

/// The groups some rule names.
fn used_groups(policy: &Policy) -> std::collections::BTreeSet<&str> {
    policy
        .rules
        .iter()
        .flat_map(|r| r.from.iter().chain(&r.to))
        .filter_map(|p| match p {
            Peer::Group(g) => Some(g.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether a group no rule names deserves a warning: only those a policy
/// file's `groups:` defines. An audit group acts without rules; the groups
/// NetworkPolicies and the Kubernetes objects make are the agent's own (a
/// NetworkPolicy that only isolates its pods has no rule).
fn reported_when_unused(g: &policy::Group) -> bool {
    !g.audit
        && !g.anonymous
        && g.origin
            .as_ref()
            .is_some_and(|o| o.field.starts_with("groups."))
}

/// Entries are credited to the first rule that produces them (the rest of
/// their rules are shadowed there), so a rule fully covered by earlier ones
/// shows 0.
fn rule_docs(policy: &Policy, compiled: &Compiled) -> Vec<RuleDoc> {
    let mut counts = vec![0usize; compiled.rule_names.len()];
    let mut refusing = vec![0usize; compiled.rule_names.len()];
    for (_, _, v) in &compiled.rules {
        if let Some(c) = counts.get_mut(v.rule_id as usize) {
            *c += 1;
        }
        if v.flags & agent_common::RULE_FLAG_DENY != 0 {
            if let Some(c) = refusing.get_mut(v.rule_id as usize) {
                *c += 1;
            }
        }
    }
    let mut builtins = policy::builtin_rules(policy, &CompileOptions::default());
    if let Some(w) = &policy.workloads {
        // NetworkPolicy sides and the open pods' rule: made by the compiler.
        builtins.extend(w.sides.iter().map(policy::side_rule));
        let any = [policy::Peer::Any];
        builtins.push(policy::Rule::new(
            policy::NOT_ISOLATED_RULE,
            &any,
            &any,
            &[],
        ));
    }
    compiled
        .rule_names
        .iter()
        .enumerate()
        .skip(1)
        .map(|(id, name)| {
            let own = policy.rule(name);
            let rule = own.or_else(|| builtins.iter().find(|r| &r.name == name));
            RuleDoc {
                id: id as u32,
                name: name.clone(),
                summary: rule.map_or_else(String::new, |r| r.summary()),
                entries: counts[id],
                refusing: refusing[id],
                audit: compiled.rule_audit.get(id).copied().unwrap_or(false),
                builtin: own.is_none(),
                origin: rule
                    .and_then(|r| r.origin.as_ref())
                    .map(|o| o.rule.to_string()),
            }
        })
        .collect()
}

/// Everything `check` prints about a policy that compiled, for people.
pub fn report(doc: &CheckDoc, policy: &Policy, compiled: &Compiled, limits: &MapLimits) -> String {
    let mut out = String::new();
    let verdict = if doc.valid { "OK" } else { "REFUSED" };
    let _ = writeln!(
        out,
        "{}: {verdict}: {}, {}",
        doc.path,
        count(policy.groups.len(), "group"),
        count(policy.rules.len(), "rule")
    );
    out += &groups(policy);
    out += &identities(compiled);
    out += &rules(&doc.rules);
    out += &maps(compiled, limits);
    for w in &doc.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn groups(policy: &Policy) -> String {
    let mut out = format!("groups ({}):\n", policy.groups.len());
    for g in &policy.groups {
        let cidrs = list(g.cidrs.iter());
        let except = if g.except.is_empty() {
            String::new()
        } else {
            format!(" except {}", list(g.except.iter()))
        };
        let at = g
            .origin
            .as_ref()
            .map_or_else(String::new, |o| format!("  ({o})"));
        let _ = writeln!(out, "  {}: {cidrs}{except}{at}", g.name);
    }
    out
}

fn identities(compiled: &Compiled) -> String {
    let mut out = format!("identities ({}):\n", compiled.identities.len());
    for id in &compiled.identities {
        let _ = writeln!(out, "  {:>6}  {}", id.id, id.groups.join(", "));
    }
    out
}

fn rules(rules: &[RuleDoc]) -> String {
    let mut out = format!("rules ({}):\n", rules.len());
    for r in rules {
        let mut n = match r.entries {
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        };
        if r.refusing > 0 {
            let _ = write!(n, " ({} refusing: {})", r.refusing, policy::ENCAP_REFUSAL);
        }
        let at = r
            .origin
            .as_ref()
            .map_or_else(String::new, |o| format!("  ({o})"));
        let _ = writeln!(out, "  {:>4}  {}: {}: {n}{at}", r.id, r.name, r.summary);
    }
    out
}

fn maps(compiled: &Compiled, limits: &MapLimits) -> String {
    let mut out = String::from("map sizes:\n");
    for u in policy::map_usage(compiled, limits) {
        let verdict = if u.fits() { "" } else { "  TOO MANY" };
        let _ = writeln!(
            out,
            "  {:<14} {:>8} of {:>8} (--{}){verdict}",
            u.what, u.used, u.limit, u.flag
        );
    }
    out
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    const TEXT: &str = "
groups:
  ledger: [10.0.1.0/24]
  aiven:
    cidrs: [10.1.0.0/16]
    except: [10.1.3.0/24]
rules:
  - name: ledger-to-aiven
    from: ledger
    to: aiven
    ports: [5432/tcp, 5400-5499/udp]
  - name: shadowed
    from: ledger
    to: aiven
    ports: [5432/tcp]
";

    fn compiled(text: &str) -> (Policy, Compiled) {
        let policy = policy::merge(vec![policy::parse_str("p.yaml", text).unwrap()]).unwrap();
        let c = policy::compile(&policy, &CompileOptions::default()).unwrap();
        (policy, c)
    }

    /// `check` parsed from its command line (the path is not read).
    fn args(flags: &[&str]) -> CheckArgs {
        let argv = ["netpol-agent", "check", "p.yaml"].iter().chain(flags);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Check(a) => a,
            _ => unreachable!(),
        }
    }

    /// The document `check` makes of `text` with `flags`.
    fn doc(text: &str, flags: &[&str]) -> CheckDoc {
        let a = args(flags);
        let policy = policy::merge(vec![policy::parse_str("p.yaml", text).unwrap()]).unwrap();
        let opts = CompileOptions {
            host_addrs: a.host_addr.clone(),
            enforce_host: a.enforce_host,
            node_cidrs: Vec::new(),
        };
        let c = policy::compile(&policy, &opts).unwrap();
        CheckDoc::new("p.yaml", &policy, &c, &opts, &a)
    }

    const ROOMY: MapLimits = MapLimits {
        prefix_max: 1000,
        rule_max: 1000,
    };

    #[test]
    fn lists_groups_with_origins() {
        let (p, _) = compiled(TEXT);
        assert_eq!(
            groups(&p),
            "groups (2):\n  ledger: 10.0.1.0/24  (p.yaml:3:3)\n  aiven: 10.1.0.0/16 except 10.1.3.0/24  (p.yaml:4:3)\n"
        );
    }

    #[test]
    fn lists_identities_by_id() {
        let (_, c) = compiled(TEXT);
        let text = identities(&c);
        assert!(
            text.starts_with(&format!(
                "identities ({}):\n       1  world\n",
                c.identities.len()
            )),
            "{text}"
        );
        assert!(text.contains("  aiven\n"), "{text}");
        assert!(text.contains("  ledger\n"), "{text}");
    }

    #[test]
    fn counts_entries_per_rule() {
        let (p, c) = compiled(TEXT);
        let text = rules(&rule_docs(&p, &c));
        // 5432/tcp is one entry; 5400-5499/udp splits into aligned blocks.
        let udp = policy::port_blocks(5400, 5499).len();
        assert!(
            text.contains(&format!(
                "     1  ledger-to-aiven: from ledger to aiven ports 5432/tcp, 5400-5499/udp: {} entries  (p.yaml:8:5)",
                1 + udp
            )),
            "{text}"
        );
        assert!(
            text.contains("     2  shadowed: from ledger to aiven ports 5432/tcp: 0 entries"),
            "{text}"
        );
        assert!(
            text.contains("builtin:host-ingress: from any to host ports any:"),
            "{text}"
        );
        assert!(text.starts_with("rules (5):\n"), "{text}");
    }

    #[test]
    fn map_sizes_against_limits() {
        let (_, c) = compiled(TEXT);
        let text = maps(
            &c,
            &MapLimits {
                prefix_max: 2,
                rule_max: 1000,
            },
        );
        let v4 = c.ids_v4.len();
        assert!(
            text.contains(&format!(
                "  IPv4 prefixes  {v4:>8} of        2 (--prefix-max)  TOO MANY\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("  IPv6 prefixes         1 of        2 (--prefix-max)\n"),
            "{text}"
        );
        assert!(policy::check_capacity(&c, &ROOMY).is_ok());
    }

    #[test]
    fn report_has_every_section() {
        let (p, c) = compiled(TEXT);
        let d = doc(TEXT, &[]);
        let text = report(&d, &p, &c, &ROOMY);
        assert!(
            text.starts_with("p.yaml: OK: 2 groups, 2 rules\ngroups (2):\n"),
            "{text}"
        );
        for section in ["identities (", "rules (5):", "map sizes:"] {
            assert!(text.contains(section), "{section} in {text}");
        }
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn the_document_holds_what_the_table_shows() {
        let d = doc(TEXT, &[]);
        assert!(
            d.valid && d.errors.is_empty() && d.warnings.is_empty(),
            "{d:#?}"
        );
        let names: Vec<&str> = d.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["ledger", "aiven"]);
        assert_eq!(d.groups[1].except, ["10.1.3.0/24"]);
        assert_eq!(d.groups[1].origin.as_deref(), Some("p.yaml:4:3"));
        assert!(d.groups.iter().all(|g| g.used));
        let udp = policy::port_blocks(5400, 5499).len();
        let r = &d.rules[0];
        assert_eq!(
            (r.id, r.name.as_str(), r.entries),
            (1, "ledger-to-aiven", 1 + udp)
        );
        assert_eq!(
            r.summary,
            "from ledger to aiven ports 5432/tcp, 5400-5499/udp"
        );
        assert!(!r.builtin && d.rules[2].builtin, "{:?}", d.rules);
        assert_eq!(d.rules[1].entries, 0);
        assert_eq!(
            d.identities[0],
            IdentityDoc {
                id: 1,
                groups: vec!["world".into()]
            }
        );
        assert_eq!(d.maps[2].map, "rule entries");
        assert_eq!(d.maps[2].flag, "--rule-max");
        assert!(d.maps.iter().all(|m| m.fits));
        // The JSON keys are the stable interface: check their names.
        let json: serde_json::Value = serde_json::from_str(&output::json(&d).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "path",
                "valid",
                "groups",
                "identities",
                "rules",
                "maps",
                "lockout",
                "warnings",
                "errors"
            ]
        );
        assert_eq!(json["rules"][0]["origin"], "p.yaml:8:5");
        assert_eq!(json["maps"][0]["used"], d.maps[0].used);
    }

    #[test]
    fn what_run_refuses_is_an_error_unless_its_flag_is_given() {
        let empty = "groups:\n  web: [10.0.0.0/8]\n";
        let d = doc(empty, &[]);
        assert!(!d.valid);
        assert_eq!(d.lockout.len(), 1);
        assert_eq!(d.lockout[0].kind, "empty-policy");
        assert_eq!(d.lockout[0].flag, "--allow-empty-policy");
        assert!(!d.lockout[0].allowed);
        assert_eq!(d.errors.len(), 1);
        assert!(
            d.errors[0].message.starts_with("the policy has no rules"),
            "{d:#?}"
        );

        let d = doc(empty, &["--allow-empty-policy"]);
        assert!(d.valid && d.errors.is_empty(), "{d:#?}");
        assert!(d.lockout[0].allowed);
        assert!(
            d.warnings[0].starts_with("allowed by --allow-empty-policy: the policy has no rules"),
            "{:?}",
            d.warnings
        );

        // The host cut off: only with the node's addresses can it be judged.
        let no_host =
            "groups:\n  web: [10.0.0.0/8]\nrules:\n  - name: w\n    from: web\n    to: web\n";
        let d = doc(no_host, &["--enforce-host"]);
        assert!(d.valid, "{d:#?}");
        assert!(
            d.warnings[0].contains("give them with --host-addr"),
            "{:?}",
            d.warnings
        );
        let d = doc(no_host, &["--enforce-host", "--host-addr", "192.0.2.5"]);
        assert!(!d.valid);
        assert!(
            d.lockout.iter().all(|l| l.kind == "host" && !l.allowed),
            "{d:#?}"
        );
        assert_eq!(
            d.errors.len(),
            2,
            "nothing from and nothing to the node: {d:#?}"
        );
        let d = doc(
            no_host,
            &[
                "--enforce-host",
                "--host-addr",
                "192.0.2.5",
                "--allow-host-lockout",
            ],
        );
        assert!(d.valid, "{d:#?}");

        // Too big for the maps, as run sizes them.
        let d = doc(TEXT, &["--rule-max", "2"]);
        assert!(!d.valid);
        assert!(d.errors[0].message.contains("raise --rule-max"), "{d:#?}");
        assert!(!d.maps[2].fits);
    }

    #[test]
    fn groups_no_rule_names_are_warned_about() {
        let text = "
groups:
  web: [10.0.0.0/8]
  legacy: [10.9.0.0/16]
  watched:
    cidrs: [10.8.0.0/16]
    audit: true
rules:
  - name: w
    within: [web]
";
        let d = doc(text, &[]);
        assert!(d.valid);
        assert_eq!(
            d.warnings,
            ["group \"legacy\" (p.yaml:4:3) is named by no rule: it only keeps its addresses out of world"]
        );
        let used: Vec<bool> = d.groups.iter().map(|g| g.used).collect();
        assert_eq!(used, [true, false, false]);
        let (p, c) = compiled(text);
        let table = report(&d, &p, &c, &ROOMY);
        assert!(table.ends_with("warning: group \"legacy\" (p.yaml:4:3) is named by no rule: it only keeps its addresses out of world\n"), "{table}");
    }

    #[test]
    fn groups_kubernetes_objects_make_are_not_warned_about() {
        // A NetworkPolicy that only isolates its pods names its group in no
        // rule, and that is what it means.
        let text = r#"
groups:
  web: [10.0.1.0/24]
rules:
  - name: w
    within: web
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: shop
  annotations:
    netpol-agent/cidrs: "10.0.9.0/24"
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;
        let d = doc(text, &[]);
        assert!(
            d.groups
                .iter()
                .any(|g| g.name == "shop/deny-all" && !g.used),
            "{d:#?}"
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn a_refused_policy_says_so_in_its_first_line() {
        let empty = "groups:\n  web: [10.0.0.0/8]\n";
        let (p, c) = compiled(empty);
        let d = doc(empty, &[]);
        let text = report(&d, &p, &c, &ROOMY);
        assert!(
            text.starts_with("p.yaml: REFUSED: 1 group, 0 rules\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_of_the_files_become_the_document() {
        let errors = policy::PolicyErrors(vec![
            policy::PolicyError {
                file: "p.yaml".into(),
                line: 7,
                column: 14,
                field: "rules[0].ports[0]".into(),
                message: "\"tcp:53\": write 53/tcp".into(),
            },
            policy::PolicyError::file("q.yaml", "cannot read: denied"),
        ]);
        let d = CheckDoc::invalid("dir", &errors);
        assert!(!d.valid);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["errors"],
            serde_json::json!([
                {"file": "p.yaml", "line": 7, "column": 14, "field": "rules[0].ports[0]", "message": "\"tcp:53\": write 53/tcp"},
                {"file": "q.yaml", "message": "cannot read: denied"},
            ])
        );
    }

    #[test]
    fn only_files_run_reads_are_checked() {
        let dir = std::env::temp_dir().join(format!("netpol-check-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["p.yaml", "p.yml", "p.json", ".p.yaml", "p.yaml.bak"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert!(readable_by_run(&dir.join("p.yaml")).is_ok());
        assert!(readable_by_run(&dir.join("p.yml")).is_ok());
        assert!(readable_by_run(&dir).is_ok());
        // Missing: reading it reports that, with the path.
        assert!(readable_by_run(&dir.join("missing.json")).is_ok());
        let err = |n: &str| readable_by_run(&dir.join(n)).unwrap_err().to_string();
        assert_eq!(
            err("p.json"),
            format!(
                "{}: run would not read this file from a policy directory (it reads only *.yaml and *.yml files); rename it",
                dir.join("p.json").display()
            )
        );
        assert!(err("p.yaml.bak").contains("it reads only *.yaml and *.yml files"));
        assert!(err(".p.yaml").contains("it skips names starting with '.'"));
        // And it is the same rule `run` applies to a directory.
        let read: Vec<String> = policy::policy_files(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(read, ["p.yaml", "p.yml"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
