//! `netpol-agent check`: validate and show what a policy compiles to, without
//! privileges or a kernel: groups, identities, rules with their entry counts,
//! map sizes against their limits, and what `run` would refuse as a lockout.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::{
    cli::CheckArgs,
    policy::{self, Cluster, CompileOptions, Compiled, MapLimits, Policy},
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
            let mut files = vec![policy::read_file(path, limits)?];
            files.extend(netpols);
            let mut p = policy::merge(files)?;
            policy::with_cluster(&mut p, &cluster);
            Ok((p, cluster))
        }
        None if path.is_dir() => Ok((policy::load_dir(path, limits)?, Cluster::default())),
        None => Ok((policy::load_file(path, limits)?, Cluster::default())),
    }
}

pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let (policy, _) = load(
        &args.path,
        args.kube_objects.as_deref(),
        &args.read.limits(),
    )?;
    let opts = CompileOptions {
        host_addrs: args.host_addr.clone(),
        enforce_host: args.enforce_host,
    };
    let compiled = policy::compile(&policy, &opts).context("compiling")?;
    print!(
        "{}",
        report(
            &args.path.display().to_string(),
            &policy,
            &compiled,
            &args.limits()
        )
    );
    for problem in policy::lockout_problems(&policy, &compiled, &opts) {
        println!("warning: run would refuse this policy: {problem}");
    }
    // Last, so that the report shows what was too big.
    policy::check_capacity(&compiled, &args.limits())?;
    Ok(())
}

/// Everything `check` prints about a policy that compiled.
pub fn report(name: &str, policy: &Policy, compiled: &Compiled, limits: &MapLimits) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: OK: {}, {}",
        count(policy.groups.len(), "group"),
        count(policy.rules.len(), "rule")
    );
    out += &groups(policy);
    out += &identities(compiled);
    out += &rules(policy, compiled);
    out += &maps(compiled, limits);
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

/// Entries are credited to the first rule that produces them (the rest of
/// their rules are shadowed there), so a rule fully covered by earlier ones
/// shows 0.
fn rules(policy: &Policy, compiled: &Compiled) -> String {
    let mut counts = vec![0usize; compiled.rule_names.len()];
    for (_, _, v) in &compiled.rules {
        if let Some(c) = counts.get_mut(v.rule_id as usize) {
            *c += 1;
        }
    }
    let builtins = policy::builtin_rules(policy, &CompileOptions::default());
    let mut out = format!("rules ({}):\n", compiled.rule_names.len() - 1);
    for (id, name) in compiled.rule_names.iter().enumerate().skip(1) {
        let rule = policy
            .rule(name)
            .or_else(|| builtins.iter().find(|r| &r.name == name));
        let summary = rule.map_or_else(String::new, |r| r.summary());
        let at = rule
            .and_then(|r| r.origin.as_ref())
            .map_or_else(String::new, |o| format!("  ({})", o.rule));
        let n = match counts[id] {
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        };
        let _ = writeln!(out, "  {id:>4}  {name}: {summary}: {n}{at}");
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
        let text = rules(&p, &c);
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
        assert!(text.starts_with("rules (4):\n"), "{text}");
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
        let text = report("dir", &p, &c, &ROOMY);
        assert!(
            text.starts_with("dir: OK: 2 groups, 2 rules\ngroups (2):\n"),
            "{text}"
        );
        for section in ["identities (", "rules (4):", "map sizes:"] {
            assert!(text.contains(section), "{section} in {text}");
        }
    }
}
