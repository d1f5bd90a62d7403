//! Lockout protection: policies that would cut off every workload or the node
//! itself are refused by `run` unless an explicit flag says they are meant.
//!
//! An empty policy directory is the easiest mistake to make (a ConfigMap
//! mounted at the wrong path, a typo in the file extension) and enforcing it
//! drops all workload traffic; with `enforce-host` on, a policy that forgot the
//! node can cut the node off from its API server and its operators.

use std::net::IpAddr;

use agent_common::RuleKey;

use super::compile::{enforces_host, CompileOptions, Compiled};
use super::evaluate::identity_of;
use super::model::Policy;

/// The flag that lets `run` enforce a policy without rules or whose rules allow nothing.
pub const ALLOW_EMPTY_POLICY_FLAG: &str = "--allow-empty-policy";
/// The flag that lets `run` enforce a policy that denies all of the node's own traffic.
pub const ALLOW_HOST_LOCKOUT_FLAG: &str = "--allow-host-lockout";

/// What a lockout problem cuts off, which decides the flag that overrides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockoutKind {
    /// No rule allows any workload traffic.
    EmptyPolicy,
    /// With `enforce-host`, nothing may leave or reach the node's own addresses.
    Host,
}

impl LockoutKind {
    pub fn flag(self) -> &'static str {
        match self {
            LockoutKind::EmptyPolicy => ALLOW_EMPTY_POLICY_FLAG,
            LockoutKind::Host => ALLOW_HOST_LOCKOUT_FLAG,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutProblem {
    pub kind: LockoutKind,
    /// Says why, and names the flag that overrides it.
    pub message: String,
}

/// `run` refused to enforce a policy; `main` exits with 2 (invalid policy).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LockoutRefused(pub Vec<String>);

impl std::fmt::Display for LockoutRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refusing to enforce this policy:")?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Why enforcing `policy` would lock out the workloads or the node, as
/// messages that say why and which flag overrides it; empty when it would not.
///
/// `compiled` must be `compile(policy, opts)` and `opts` what `run` enforces
/// with (its `host_addrs` are the node's addresses, `enforce_host` the flag).
/// Problems:
/// - the policy has no rules, or its rules compile to no entry (every group
///   they name is empty): all workload traffic would be dropped
///   (`--allow-empty-policy`);
/// - the host is enforced (`--enforce-host` or `settings.enforce-host`) and no
///   rule allows any traffic from the node's own addresses, or none to them,
///   on any protocol or port (`--allow-host-lockout`). Loopback addresses are
///   left out when the node has others: the agent never sees their traffic.
///   Without known node addresses this cannot be judged and is not reported.
///
/// `run` should call it at start-up before touching the kernel, drop the
/// problems whose flag was given, and fail with [`LockoutRefused`] on the rest;
/// a reload that fails it is best rejected like an invalid policy.
pub fn lockout_problems(
    policy: &Policy,
    compiled: &Compiled,
    opts: &CompileOptions,
) -> Vec<String> {
    lockout_findings(policy, compiled, opts)
        .into_iter()
        .map(|p| p.message)
        .collect()
}

/// [`lockout_problems`] with each problem's kind, to filter by flag.
pub fn lockout_findings(
    policy: &Policy,
    compiled: &Compiled,
    opts: &CompileOptions,
) -> Vec<LockoutProblem> {
    let mut out = Vec::new();
    out.extend(empty_policy(policy, compiled));
    if enforces_host(policy, opts) {
        out.extend(host_lockout(compiled, &opts.host_addrs));
    }
    out
}

/// `Err` with the problems `allow_empty` / `allow_host` do not override.
pub fn refuse_lockout(
    policy: &Policy,
    compiled: &Compiled,
    opts: &CompileOptions,
    allow_empty: bool,
    allow_host: bool,
) -> Result<(), LockoutRefused> {
    let left: Vec<String> = lockout_findings(policy, compiled, opts)
        .into_iter()
        .filter(|p| match p.kind {
            LockoutKind::EmptyPolicy => !allow_empty,
            LockoutKind::Host => !allow_host,
        })
        .map(|p| p.message)
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(LockoutRefused(left))
    }
}

fn empty_policy(policy: &Policy, compiled: &Compiled) -> Option<LockoutProblem> {
    // NetworkPolicies deny only what they select, so a default-deny
    // NetworkPolicy is a policy of its own: the refusal is for native rules.
    if policy.rules.is_empty() && policy.workloads.is_some() && !policy.netpols.is_empty() {
        return None;
    }
    let flag = ALLOW_EMPTY_POLICY_FLAG;
    let message = if policy.rules.is_empty() {
        format!(
            "the policy has no rules: enforcing it would deny all workload traffic \
             (everything no rule allows is dropped). Check the policy directory, or pass {flag} \
             if denying everything is intended"
        )
    } else {
        // The compiler numbers the policy's own rules 1..=n, before built-in ones.
        let n = policy.rules.len();
        let own = |id: u32| (1..=n).contains(&(id as usize));
        if compiled.rules.iter().any(|(_, _, v)| own(v.rule_id)) {
            return None;
        }
        format!(
            "the policy's {n} rule(s) allow nothing (every group they name is empty): enforcing it \
             would deny all workload traffic. Fix the groups, or pass {flag} if that is intended"
        )
    };
    Some(LockoutProblem {
        kind: LockoutKind::EmptyPolicy,
        message,
    })
}

fn host_lockout(compiled: &Compiled, host_addrs: &[IpAddr]) -> Vec<LockoutProblem> {
    let mut addrs: Vec<IpAddr> = host_addrs
        .iter()
        .copied()
        .filter(|a| !a.is_loopback())
        .collect();
    if addrs.is_empty() {
        addrs = host_addrs.to_vec();
    }
    let ids_of = |addrs: &[IpAddr]| -> Vec<u32> {
        addrs
            .iter()
            .filter_map(|a| identity_of(compiled, *a).map(|v| v.id))
            .collect()
    };
    let ids = ids_of(&addrs);
    if ids.is_empty() {
        return Vec::new();
    }
    // The node talking to itself (`from: host to: any` covers it) never
    // crosses an interface, so it does not count as reaching out or in.
    let node = ids_of(host_addrs);
    let src = |k: &RuleKey| u32::from_be_bytes(k.src_id);
    let dst = |k: &RuleKey| u32::from_be_bytes(k.dst_id);
    let sends = compiled
        .rules
        .iter()
        .any(|(_, k, _)| ids.contains(&src(k)) && !node.contains(&dst(k)));
    let receives = compiled
        .rules
        .iter()
        .any(|(_, k, _)| ids.contains(&dst(k)) && !node.contains(&src(k)));
    let list = addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let flag = ALLOW_HOST_LOCKOUT_FLAG;
    let mut out = Vec::new();
    if !sends {
        out.push(format!(
            "the host is enforced and no rule allows any traffic from the node's own addresses \
             ({list}): the node could not reach DNS, its API server or anything else. Add a rule \
             with `from: host`, run without enforce-host, or pass {flag}"
        ));
    }
    if !receives {
        out.push(format!(
            "the host is enforced and no rule allows any traffic to the node's own addresses \
             ({list}): nothing could reach the node (kubelet, health checks, SSH). Add a rule \
             with `to: host`, run without enforce-host, or pass {flag}"
        ));
    }
    out.into_iter()
        .map(|message| LockoutProblem {
            kind: LockoutKind::Host,
            message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, merge, parse_str};

    fn problems(text: &str, host: &[&str], enforce_host: bool) -> Vec<LockoutProblem> {
        let policy = merge(vec![parse_str("p.yaml", text).unwrap()]).unwrap();
        let opts = CompileOptions {
            host_addrs: host.iter().map(|a| a.parse().unwrap()).collect(),
            enforce_host,
            node_cidrs: Vec::new(),
        };
        let compiled = compile(&policy, &opts).unwrap();
        assert_eq!(
            lockout_problems(&policy, &compiled, &opts),
            lockout_findings(&policy, &compiled, &opts)
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
        );
        lockout_findings(&policy, &compiled, &opts)
    }

    const SERVICES: &str = "
groups:
  a: [10.0.1.0/24]
  b: [10.0.2.0/24]
rules:
  - name: a-to-b
    from: a
    to: b
    ports: [80/tcp]
";

    #[test]
    fn empty_policy_is_a_problem() {
        let p = problems("", &["10.0.0.5"], false);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, LockoutKind::EmptyPolicy);
        assert!(p[0].message.contains("no rules"), "{}", p[0].message);
        assert!(p[0].message.contains("--allow-empty-policy"));
        // Only groups, still nothing allowed.
        let p = problems("groups:\n  a: [10.0.0.0/8]\n", &[], false);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn rules_that_allow_nothing_are_a_problem() {
        let text = "groups:\n  a: []\nrules:\n  - name: r\n    from: a\n    to: any\n";
        let p = problems(text, &["10.0.0.5"], false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("allow nothing"));
    }

    #[test]
    fn a_working_policy_is_fine() {
        assert_eq!(problems(SERVICES, &["10.0.0.5"], false), vec![]);
    }

    #[test]
    fn enforced_host_without_host_rules_is_a_problem_both_ways() {
        let p = problems(SERVICES, &["10.0.0.5", "127.0.0.1"], true);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.kind == LockoutKind::Host));
        assert!(p[0]
            .message
            .contains("from the node's own addresses (10.0.0.5)"));
        assert!(p[1]
            .message
            .contains("to the node's own addresses (10.0.0.5)"));
        assert!(p[0].message.contains("--allow-host-lockout"));
        // settings.enforce-host counts like the flag.
        let text = format!("{SERVICES}settings:\n  enforce-host: true\n");
        assert_eq!(problems(&text, &["10.0.0.5"], false).len(), 2);
    }

    #[test]
    fn one_allowed_direction_leaves_only_the_other() {
        let text = format!(
            "{SERVICES}  - name: node-out\n    from: host\n    to: any\n    ports: [53/udp]\n"
        );
        let p = problems(&text, &["10.0.0.5"], true);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("to the node's own"));
        // A CIDR covering the node counts as much as `host`.
        let text = format!(
            "{text}  - name: ssh\n    from: any\n    to: 10.0.0.0/24\n    ports: [22/tcp]\n"
        );
        assert_eq!(problems(&text, &["10.0.0.5"], true), vec![]);
    }

    #[test]
    fn host_is_not_judged_without_addresses_or_enforcement() {
        assert_eq!(problems(SERVICES, &[], true), vec![]);
        assert_eq!(problems(SERVICES, &["10.0.0.5"], false), vec![]);
    }

    #[test]
    fn loopback_counts_only_when_alone() {
        // A rule for loopback does not save the node's real address.
        let text = format!("{SERVICES}  - name: lo\n    within: [127.0.0.0/8]\n");
        assert_eq!(problems(&text, &["127.0.0.1", "10.0.0.5"], true).len(), 2);
        assert_eq!(problems(&text, &["127.0.0.1"], true), vec![]);
    }

    #[test]
    fn refuse_filters_by_flag() {
        let policy = Policy::default();
        let opts = CompileOptions {
            host_addrs: vec!["10.0.0.5".parse().unwrap()],
            enforce_host: true,
            node_cidrs: Vec::new(),
        };
        let compiled = compile(&policy, &opts).unwrap();
        let err = refuse_lockout(&policy, &compiled, &opts, false, false).unwrap_err();
        assert_eq!(err.0.len(), 3);
        assert!(err
            .to_string()
            .starts_with("refusing to enforce this policy:\n  - the policy has no rules"));
        let err = refuse_lockout(&policy, &compiled, &opts, true, false).unwrap_err();
        assert_eq!(err.0.len(), 2);
        let err = refuse_lockout(&policy, &compiled, &opts, false, true).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(refuse_lockout(&policy, &compiled, &opts, true, true).is_ok());
    }
}
