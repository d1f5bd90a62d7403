//! The policy as `run` enforces it: read, compiled with the node's addresses,
//! vetted against the map sizes and the lockout rules, and numbered with
//! rule ids that stay stable across reloads. The workloads come from the
//! objects directory or from the Kubernetes API.
use std::{net::IpAddr, time::Duration};

use log::warn;

use crate::{
    bpffs::Pinned,
    cli::RunArgs,
    datapath::{Adoption, LoadOptions, StableRuleIds, Timeouts},
    kube::KubeView,
    policy::{self, CompileOptions, Sources},
};

/// What successive compiles of one agent keep, so that a pod event costs
/// what it changes: identity ids, identities and the rule entries they
/// share (`policy::Compiler`), the object files as last parsed, and the
/// pods of every selector.
#[derive(Default)]
pub(super) struct Compiles {
    pub compiler: policy::Compiler,
    pub objects: policy::ObjectCache,
    pub selections: policy::Selections,
}

pub(super) fn load_options(args: &RunArgs) -> LoadOptions {
    let t = &args.timeouts;
    LoadOptions {
        mode: args.mode,
        timeouts: Timeouts {
            tcp_syn: Duration::from_secs(t.ct_tcp_syn_secs),
            tcp_established: Duration::from_secs(t.ct_tcp_established_secs),
            tcp_close: Duration::from_secs(t.ct_tcp_close_secs),
            udp: Duration::from_secs(t.ct_udp_secs),
            icmp: Duration::from_secs(t.ct_icmp_secs),
            other: Duration::from_secs(t.ct_other_secs),
            ..Timeouts::default()
        },
        ct_max: args.limits.ct_max,
        prefix_max: args.limits.prefix_max,
        rule_max: args.limits.rule_max,
        frag_max: args.limits.frag_max,
        counting: args.counting.options(),
        ct_source_rate: args.limits.ct_source_rate,
        ct_source_burst: args.limits.ct_source_burst,
        ..LoadOptions::default()
    }
}

/// Reads, compiles and vets the policy directory: it must fit the maps and
/// must not lock the workloads or the node out (unless the flags say so). The
/// datapath is not touched. The files as read come back with the policy, to
/// be kept as the last good one once it is enforced.
/// With `--kubernetes`, the workloads and NetworkPolicies are `kube`'s view.
/// The workloads the policy was compiled with come back with it (`None`
/// without Kubernetes identity): the source check must see the same pods.
pub(super) fn compile_dir(
    compiler: &mut Compiles,
    args: &RunArgs,
    host: &[IpAddr],
    kube: Option<&KubeView>,
) -> anyhow::Result<(policy::Compiled, Option<policy::Cluster>, Sources)> {
    let sources = policy::read_sources(&args.policy_dir, &args.read.limits())?;
    let (compiled, cluster) = compile_sources(compiler, args, &sources, host, kube)?;
    Ok((compiled, cluster, sources))
}

/// `compile_dir` of policy files already read (the directory's, or the last
/// good ones kept on disk).
pub(super) fn compile_sources(
    compiler: &mut Compiles,
    args: &RunArgs,
    sources: &Sources,
    host: &[IpAddr],
    kube: Option<&KubeView>,
) -> anyhow::Result<(policy::Compiled, Option<policy::Cluster>)> {
    let limits = args.read.limits();
    let (policy, cluster) = match (kube, &args.kube_objects) {
        (Some(view), _) => {
            let (cluster, netpols) = view.snapshot()?;
            let (p, c) = policy::load_sources_with_cluster_cached(
                sources,
                cluster,
                netpols,
                &mut compiler.selections,
            )?;
            (p, Some(c))
        }
        (None, Some(objects)) => {
            let (p, c) = policy::load_sources_with_objects_cached(
                sources,
                objects,
                &limits,
                &mut compiler.objects,
                &mut compiler.selections,
            )?;
            (p, Some(c))
        }
        (None, None) => (policy::load_sources(sources)?, None),
    };
    let opts = CompileOptions {
        host_addrs: host.to_vec(),
        enforce_host: args.enforce_host,
        node_cidrs: args.node_cidr.clone(),
    };
    let compiled = compiler.compiler.compile(&policy, &opts)?;
    let limits = policy::MapLimits {
        prefix_max: args.limits.prefix_max,
        rule_max: args.limits.rule_max,
    };
    policy::check_capacity(&compiled, &limits)?;
    policy::refuse_lockout(
        &policy,
        &compiled,
        &opts,
        args.allow_empty_policy,
        args.allow_host_lockout,
    )?;
    Ok((compiled, cluster))
}

/// Rule ids for the first policy: per-rule counters are kept by id, so ids
/// follow names, not positions, including the ids an earlier agent gave.
pub(super) fn rule_ids_after(adoption: &Adoption, args: &RunArgs) -> StableRuleIds {
    if adoption
        .adopted
        .iter()
        .any(|m| m == agent_common::map_names::RULE_NAMES)
    {
        match crate::datapath::rule_names(&Pinned::new(&args.pin_path)) {
            Ok(names) => StableRuleIds::seeded(&names),
            Err(e) => {
                warn!("reading the rule ids an earlier agent gave: {e:#}; numbering afresh");
                StableRuleIds::default()
            }
        }
    } else {
        StableRuleIds::default()
    }
}
