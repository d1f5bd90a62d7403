//! `netpol-agent run`: the start-up sequence (compile, lock, load, apply,
//! attach, report), then the `Agent` handles events until it is stopped.
//!
//! - `policy_dir`: the policy directory compiled and vetted for this node.
//! - `interfaces`: --iface patterns reconciled with the interfaces present.
//! - `sources`: pod interfaces and uplinks, and the addresses routed to each
//!   pod interface (held by a pod of this node, with Kubernetes identity),
//!   for the datapath's source check.
//! - `agent`: the running agent, one handler per event.
mod agent;
mod interfaces;
mod last_good;
mod policy_dir;
mod sources;

pub use agent::ReloadStats;
pub use interfaces::reconcile_with;

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use agent::{open_watch, Agent, Signals};
use interfaces::{attached_status, has_glob, reconcile};
use last_good::LastGood;
use policy_dir::{compile_dir, compile_sources, load_options, rule_ids_after};

use crate::{
    bpffs::{PinLayout, Pinned},
    cli::{RunArgs, NOT_READY_TAINT},
    datapath::Datapath,
    host::{hostaddrs, ifaces, linkwatch::LinkWatch},
    kube::{KubeView, DEFAULT_DEBOUNCE},
    telemetry::status::{AgentState, Attached},
    READY_MARKER,
};

/// Publishes the rule names, starts the HTTP endpoint and the event reader;
/// the returned state is what they report (the main loop keeps it current).
async fn start_observability(
    args: &RunArgs,
    compiled: &crate::policy::Compiled,
    gen: u32,
    attached: Vec<Attached>,
) -> anyhow::Result<Arc<AgentState>> {
    let mode = match args.mode {
        crate::datapath::Mode::Enforce => "enforce",
        crate::datapath::Mode::Audit => "audit",
    };
    let state = Arc::new(AgentState::new(
        Pinned::new(&args.pin_path),
        mode,
        args.counting.metrics_top_flows as usize,
    ));
    state.set_rules(compiled).context("publishing rule names")?;
    // The first policy went live: the reload timestamp starts here.
    state.own.policy_live(None);
    state.update(|s| {
        s.ready = true;
        s.policy_generation = gen;
        s.attached = attached;
    });
    crate::telemetry::http::serve(args.counting.listen, &args.counting.socket, state.clone())
        .await?;
    let events = state.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::telemetry::events::consume(events).await {
            warn!("verdict events stopped: {e:#}");
        }
    });
    Ok(state)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let host = hostaddrs::discover().context("listing the node's addresses")?;
    // Handlers first: a signal sent once the ready marker is out must never hit
    // the default action (SIGHUP's would kill the agent).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    let kube = if args.kubernetes {
        let Some(view) = kube_view(&args, &mut term, &mut int).await? else {
            return Ok(());
        };
        Some(view)
    } else {
        None
    };
    // Compile before touching the kernel: a bad policy must not half-start.
    let mut last_good = LastGood::new(&args.state_dir);
    let mut compiler = policy_dir::Compiles::default();
    let (mut compiled, cluster, first) =
        match compile_dir(&mut compiler, &args, &host, kube.as_ref()) {
            Ok((compiled, cluster, sources)) => (compiled, cluster, First::Directory(sources)),
            Err(e) => {
                let e = e.context(rejected_dir(&args, kube.is_some()));
                let why = format!("{e:#}");
                // A node that boots with a bad policy must not enforce
                // nothing: the last good policy holds until the directory is
                // fixed.
                let (compiled, cluster, kept) = fallback(
                    &mut compiler,
                    &args,
                    &mut last_good,
                    &host,
                    kube.as_ref(),
                    e,
                )?;
                (compiled, cluster, First::Fallback(kept, why))
            }
        };

    // With Kubernetes identity, the source check takes this node's pods.
    let node = match &kube {
        Some(view) => Some(view.node_name().to_owned()),
        None if args.kube_objects.is_some() => {
            Some(crate::kube::node_name(args.node_name.as_deref())?)
        }
        None => None,
    };

    // Subscribed before the first listing, so no interface slips in between.
    let links = LinkWatch::new()
        .map_err(|e| warn!("no link events ({e}); re-checking interfaces every few seconds"))
        .ok();
    let available = ifaces::list().context("listing interfaces")?;
    let selected = ifaces::select(&args.ifaces, &available).context("bad --iface pattern")?;
    if selected.is_empty() {
        if !args.ifaces.iter().any(|p| has_glob(p)) {
            bail!(
                "no interface matches --iface {:?} (interfaces here: {})",
                args.ifaces,
                available.join(", ")
            );
        }
        warn!(
            "no interface matches --iface {:?} yet; waiting for one to appear",
            args.ifaces
        );
    }

    // The lock lives in bpffs, so bpffs comes first.
    crate::bpffs::ensure_bpffs().context("mounting bpffs")?;
    let lock_wait = Duration::from_secs(args.lock_wait_secs);
    let _instance = tokio::select! {
        g = crate::bpffs::lock::acquire(&args.pin_path, lock_wait) => g.context("taking the pin directory")?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let pins = PinLayout::new(&args.pin_path);
    let (mut dp, adoption) = Datapath::load_pinned(&load_options(&args), &pins).context(
        "loading the eBPF programs (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON, \
         Linux >= 6.6 with BTF, and bpffs at /sys/fs/bpf)",
    )?;
    if let Some(g) = adoption.previous_generation {
        info!(
            "adopted pinned state under {} (policy generation {g}): maps kept {:?}, \
             resized {:?}, rebuilt {:?}",
            pins.root().display(),
            adoption.adopted,
            adoption.resized,
            adoption.rebuilt
        );
    }
    for w in dp.verifier_work() {
        if let (Some(n), Some(pct)) = (w.instructions, w.percent()) {
            info!(
                "{}: the kernel's verifier walked {n} instructions ({pct:.0}% of its limit)",
                w.program
            );
        }
    }
    let mut rule_ids = rule_ids_after(&adoption, &args);
    rule_ids.renumber(&mut compiled);
    // The new policy goes live before the links switch programs, so the
    // first packet the new programs see is judged by it.
    let gen = dp.apply(&compiled).context("writing the policy maps")?;
    // Before attaching: every pod interface is checked from its first packet.
    let mut sources = sources::Sources::new(node);
    sources.learn_pods(cluster.as_ref());
    sources
        .refresh(&mut dp, &args)
        .context("learning pod addresses from the routes")?;
    let selected = reconcile(&mut dp, &args.ifaces, args.ingress_hook, true)?;
    dp.commit_pins().context("pinning the maps")?;
    let obs = start_observability(&args, &compiled, gen, attached_status(&dp)).await?;
    let synced = kube.as_ref().map(KubeView::synced);
    obs.update(|s| s.kubernetes_synced = synced);
    let (fallback, reloads) = match first {
        First::Directory(sources) => {
            keep(&mut last_good, &sources);
            (None, ReloadStats::default())
        }
        First::Fallback(sources, error) => {
            obs.update(|s| {
                s.ready = false;
                s.policy_fallback = true;
                s.last_reload_error = Some(error.clone());
            });
            let stats = ReloadStats {
                last_error: Some(error),
                ..ReloadStats::default()
            };
            (Some(sources), stats)
        }
    };
    info!(
        "{READY_MARKER} policy generation {gen} ({} identities, {} rule entries) on {}{}",
        compiled.identities.len(),
        compiled.rules.len(),
        selected.join(", "),
        if fallback.is_some() {
            " (the last good policy: not ready until the policy directory compiles)"
        } else {
            ""
        }
    );

    // Only now, with programs attached and a policy live (the last good one
    // counts: it protects the pods as well), may pods land on this node.
    if let (true, Some(view)) = (args.remove_taint, &kube) {
        let node = view.node_name().to_owned();
        tokio::spawn(async move {
            match crate::kube::client().await {
                Ok(c) => crate::kube::remove_taint(c, node, NOT_READY_TAINT).await,
                Err(e) => warn!("node {node}: cannot remove taint {NOT_READY_TAINT}: {e:#}"),
            }
        });
    }

    let agent = Agent {
        applied_host: host.clone(),
        host,
        watch: open_watch(&args.policy_dir),
        objects_watch: args.kube_objects.as_deref().and_then(open_watch),
        kube,
        links,
        args,
        dp,
        obs,
        rule_ids,
        compiler,
        sources,
        reloads,
        last_good,
        fallback,
    };
    agent.serve(Signals { term, int, hup }).await;
    Ok(())
}

/// Where the first policy came from.
enum First {
    Directory(crate::policy::Sources),
    /// The last good files, and why the directory was rejected.
    Fallback(crate::policy::Sources, String),
}

fn rejected_dir(args: &RunArgs, kube: bool) -> String {
    match &args.kube_objects {
        _ if kube => format!(
            "policy directory {} with the Kubernetes API's objects rejected",
            args.policy_dir.display()
        ),
        Some(o) => format!(
            "policy directory {} with Kubernetes objects {} rejected",
            args.policy_dir.display(),
            o.display()
        ),
        None => format!("policy directory {} rejected", args.policy_dir.display()),
    }
}

/// The last good policy, compiled for the node as it is now, when the
/// directory is rejected (`rejected`). Without one, or when it is refused or
/// no longer compiles, the start fails with the directory's own error (exit
/// 2), and why the last good policy was not used is logged.
fn fallback(
    compiler: &mut policy_dir::Compiles,
    args: &RunArgs,
    last_good: &mut LastGood,
    host: &[std::net::IpAddr],
    kube: Option<&KubeView>,
    rejected: anyhow::Error,
) -> anyhow::Result<(
    crate::policy::Compiled,
    Option<crate::policy::Cluster>,
    crate::policy::Sources,
)> {
    let sources = match last_good.load(&args.read.limits()) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(rejected),
        Err(e) => {
            error!("the last good policy is refused, nothing to fall back to: {e:#}");
            return Err(rejected);
        }
    };
    match compile_sources(compiler, args, &sources, host, kube) {
        Ok((compiled, cluster)) => {
            error!("{rejected:#}");
            warn!(
                "enforcing the last good policy kept in {} ({} files) until the policy \
                 directory compiles",
                last_good.path().display(),
                sources.files.len()
            );
            Ok((compiled, cluster, sources))
        }
        Err(e) => {
            error!(
                "the last good policy in {} does not compile for this node either: {e:#}",
                last_good.path().display()
            );
            Err(rejected)
        }
    }
}

/// Keeps the policy enforced as the last good one; a failure to write it
/// costs only the fallback, not the enforcement.
fn keep(last_good: &mut LastGood, sources: &crate::policy::Sources) {
    if !sources.complete() {
        return;
    }
    match last_good.save(sources) {
        Ok(true) => info!(
            "kept as the last good policy: {}",
            last_good.path().display()
        ),
        Ok(false) => {}
        Err(e) => warn!("{e:#}"),
    }
}

/// Connects to the API server and waits until the first lists of every
/// watched resource are in: enforcing before that would judge workloads by
/// a partial view (pods without their namespace's labels, NetworkPolicies
/// missing). `None` when TERM or INT came first.
async fn kube_view(
    args: &RunArgs,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Option<KubeView>> {
    let node = crate::kube::node_name(args.node_name.as_deref())?;
    let client = crate::kube::client().await?;
    let mut view = KubeView::start(client, node, DEFAULT_DEBOUNCE);
    info!(
        "Kubernetes API: watching namespaces, pods and networkpolicies as node {}",
        view.node_name()
    );
    let mut waiting = tokio::time::interval(std::time::Duration::from_secs(10));
    waiting.tick().await;
    while !view.synced() {
        tokio::select! {
            _ = view.changed() => {}
            _ = waiting.tick() => warn!(
                "Kubernetes API: still waiting for the first list of {:?}; no policy is \
                 enforced until then (check the API server address and the RBAC in deploy/)",
                view.unsynced().iter().map(ToString::to_string).collect::<Vec<_>>()
            ),
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
        }
    }
    if let Ok((cluster, _)) = view.snapshot() {
        let here = cluster
            .pods
            .iter()
            .filter(|p| p.node_name.as_deref() == Some(view.node_name()))
            .count();
        info!(
            "Kubernetes API: synced ({} namespaces, {} pods, {here} on this node)",
            cluster.namespaces.len(),
            cluster.pods.len()
        );
    }
    Ok(Some(view))
}
