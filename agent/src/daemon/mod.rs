//! `netpol-agent run`: load, compile, attach, then keep the policy current.
use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{bail, Context as _};
use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    bpffs::{PinLayout, Pinned},
    cli::RunArgs,
    datapath::{Datapath, LoadOptions, Timeouts},
    host::{dirwatch::DirWatch, hostaddrs, ifaces, linkwatch::LinkWatch},
    policy::{self, CompileOptions},
    telemetry::status::AgentState,
    READY_MARKER,
};

fn load_options(args: &RunArgs) -> LoadOptions {
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
        ..LoadOptions::default()
    }
}

/// Reads, compiles and vets the policy directory: it must fit the maps and
/// must not lock the workloads or the node out (unless the flags say so). The
/// datapath is not touched.
fn compile_dir(args: &RunArgs, host: &[IpAddr]) -> anyhow::Result<policy::Compiled> {
    let policy = policy::load_dir(&args.policy_dir)?;
    let opts = CompileOptions {
        host_addrs: host.to_vec(),
        enforce_host: args.enforce_host,
    };
    let compiled = policy::compile(&policy, &opts)?;
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
    Ok(compiled)
}

/// Reload outcomes, kept for the status and metrics the agent reports.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub ok: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

fn open_watch(dir: &Path) -> Option<DirWatch> {
    DirWatch::new(dir)
        .map_err(|e| warn!("cannot watch {} (SIGHUP still reloads): {e}", dir.display()))
        .ok()
}

async fn watched(watch: &mut Option<DirWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Brings the attachments in line with --iface and the interfaces present
/// now: attaches to new matches (adopting pinned links), forgets interfaces
/// that went away or were re-created, and unpins links of interfaces no
/// longer matched. With `strict`, the first attach error is returned;
/// otherwise it is logged and retried at the next event.
fn reconcile(dp: &mut Datapath, patterns: &[String], strict: bool) -> anyhow::Result<Vec<String>> {
    let available = ifaces::list().context("listing interfaces")?;
    let selected = ifaces::select(patterns, &available).context("bad --iface pattern")?;
    for iface in dp.attached() {
        if !selected.contains(&iface) {
            dp.detach(&iface);
            info!("{iface}: gone or no longer matched by --iface; forgotten");
        }
    }
    for iface in &selected {
        let before = dp.attached_ifindex(iface);
        match dp.attach(iface) {
            Ok(a) if before != Some(a.ifindex) => info!(
                "{iface}: XDP ({}) ingress and TC egress {}",
                a.xdp_mode,
                if a.adopted {
                    "adopted from pinned links and switched to this agent's programs"
                } else {
                    "attached"
                }
            ),
            Ok(_) => {}
            Err(e) if strict => return Err(e).with_context(|| format!("enforcing on {iface}")),
            Err(e) => error!("{iface}: not enforced yet, will retry: {e}"),
        }
    }
    for (iface, path) in dp.stale_pinned_links() {
        if !selected.contains(&iface) {
            match std::fs::remove_file(&path) {
                Ok(()) => info!("{iface}: no longer matched; removed {}", path.display()),
                Err(e) => warn!("removing {}: {e}", path.display()),
            }
        }
    }
    Ok(selected)
}

/// The interfaces enforced now, for /status and the metrics.
fn attached_status(dp: &Datapath) -> Vec<crate::telemetry::status::Attached> {
    dp.attachments()
        .into_iter()
        .map(|a| crate::telemetry::status::Attached {
            interface: a.iface,
            xdp_mode: a.xdp_mode.to_owned(),
        })
        .collect()
}

async fn link_event(watch: &mut Option<LinkWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Publishes the rule names, starts the HTTP endpoint and the event reader;
/// the returned state is what they report (the main loop keeps it current).
async fn start_observability(
    args: &RunArgs,
    compiled: &policy::Compiled,
    gen: u32,
    attached: Vec<crate::telemetry::status::Attached>,
) -> anyhow::Result<std::sync::Arc<AgentState>> {
    let mode = match args.mode {
        crate::datapath::Mode::Enforce => "enforce",
        crate::datapath::Mode::Audit => "audit",
    };
    let state = std::sync::Arc::new(AgentState::new(
        Pinned::new(&args.pin_path),
        mode,
        args.counting.metrics_top_flows as usize,
    ));
    state.set_rules(compiled).context("publishing rule names")?;
    state.update(|s| {
        s.ready = true;
        s.policy_generation = gen;
        s.attached = attached;
    });
    crate::telemetry::http::serve(args.counting.listen, state.clone()).await?;
    let events = state.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::telemetry::events::consume(events).await {
            warn!("verdict events stopped: {e:#}");
        }
    });
    Ok(state)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut host = hostaddrs::discover().context("listing the node's addresses")?;
    // Compile before touching the kernel: a bad policy must not half-start.
    let mut compiled = compile_dir(&args, &host)
        .with_context(|| format!("policy directory {} rejected", args.policy_dir.display()))?;

    // Subscribed before the first listing, so no interface slips in between.
    let mut links = LinkWatch::new()
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

    // Handlers first: a signal sent once the ready marker is out must never hit
    // the default action (SIGHUP's would kill the agent).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let _instance = tokio::select! {
        g = crate::bpffs::lock::acquire(&args.pin_path) => g.context("taking the pin directory")?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    crate::bpffs::ensure_bpffs().context("mounting bpffs")?;
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
    // Per-rule counters are kept by rule id: ids must follow names, not
    // positions, including the ids an earlier agent gave (its counters were
    // adopted with the maps).
    let mut rule_ids = if adoption
        .adopted
        .iter()
        .any(|m| m == agent_common::map_names::RULE_NAMES)
    {
        match crate::datapath::rule_names(&crate::bpffs::Pinned::new(&args.pin_path)) {
            Ok(names) => crate::datapath::StableRuleIds::seeded(&names),
            Err(e) => {
                warn!("reading the rule ids an earlier agent gave: {e:#}; numbering afresh");
                crate::datapath::StableRuleIds::default()
            }
        }
    } else {
        crate::datapath::StableRuleIds::default()
    };
    rule_ids.renumber(&mut compiled);
    // The new policy goes live before the links switch programs, so the
    // first packet the new programs see is judged by it.
    let gen = dp.apply(&compiled).context("writing the policy maps")?;
    let selected = reconcile(&mut dp, &args.ifaces, true)?;
    dp.commit_pins().context("pinning the maps")?;
    let obs = start_observability(&args, &compiled, gen, attached_status(&dp)).await?;
    info!(
        "{READY_MARKER} policy generation {gen} ({} identities, {} rule entries) on {}",
        compiled.identities.len(),
        compiled.rules.len(),
        selected.join(", ")
    );

    let mut applied_host = host.clone();
    let mut watch = open_watch(&args.policy_dir);
    let mut reloads = ReloadStats::default();
    let mut host_tick = tokio::time::interval(Duration::from_secs(args.host_refresh_secs.max(1)));
    let mut gc_tick = tokio::time::interval(Duration::from_secs(args.gc_interval_secs.max(1)));
    loop {
        let reload = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", args.policy_dir.display());
                true
            }
            r = watched(&mut watch) => {
                if let Err(e) = r {
                    warn!("watching {}: {e}", args.policy_dir.display());
                }
                // Re-arm: the directory itself may have been replaced.
                watch = open_watch(&args.policy_dir);
                info!("{} changed: reloading", args.policy_dir.display());
                true
            }
            r = link_event(&mut links) => {
                if let Err(e) = r {
                    warn!("link events: {e}; re-checking interfaces every few seconds");
                    links = None;
                }
                if let Err(e) = reconcile(&mut dp, &args.ifaces, false) {
                    warn!("{e:#}");
                }
                let now = attached_status(&dp);
                obs.update(|s| s.attached = now);
                false
            }
            _ = host_tick.tick() => {
                if watch.is_none() {
                    watch = open_watch(&args.policy_dir);
                }
                // A safety net for lost link events.
                if let Err(e) = reconcile(&mut dp, &args.ifaces, false) {
                    warn!("{e:#}");
                }
                let now = attached_status(&dp);
                obs.update(|s| s.attached = now);
                match hostaddrs::discover() {
                    Ok(now) if now != host => {
                        info!("node addresses changed: {now:?}");
                        host = now;
                    }
                    Ok(_) => {}
                    Err(e) => warn!("listing the node's addresses: {e}"),
                }
                // Until a policy with the current addresses is live, retry:
                // a failed reload must not leave `host` stale for good.
                host != applied_host
            },
            _ = gc_tick.tick() => {
                match dp.collect_expired() {
                    Ok(0) => {}
                    Ok(n) => info!("conntrack: reclaimed {n} expired entries"),
                    Err(e) => warn!("conntrack sweep: {e}"),
                }
                false
            }
        };
        if reload {
            // A policy that does not compile leaves the last good one enforced.
            let result = compile_dir(&args, &host)
                .map_err(|e| format!("reload rejected, previous policy stays: {e:#}"))
                .and_then(|mut c| {
                    rule_ids.renumber(&mut c);
                    dp.apply(&c)
                        .map(|gen| (gen, c))
                        .map_err(|e| format!("reload failed, previous policy stays: {e}"))
                });
            match result {
                Ok((gen, compiled)) => {
                    applied_host.clone_from(&host);
                    reloads.ok += 1;
                    reloads.last_error = None;
                    info!("policy generation {gen} enforced");
                    if let Err(e) = obs.set_rules(&compiled) {
                        warn!("publishing rule names: {e:#}");
                    }
                }
                Err(e) => {
                    reloads.failed += 1;
                    error!("{e} ({} failed reloads so far)", reloads.failed);
                    reloads.last_error = Some(e);
                }
            }
            obs.update(|s| {
                s.policy_generation = dp.config().policy_gen;
                s.reloads_succeeded = reloads.ok;
                s.reloads_failed = reloads.failed;
                s.last_reload_error.clone_from(&reloads.last_error);
            });
        }
    }
    // Enforcement outlives the agent: the pinned links keep the programs on
    // every interface (a node must not open up while its agent restarts).
    info!(
        "exiting; enforcement stays on {} (pinned under {}); \
         `netpol-agent uninstall --pin-path {}` removes it",
        dp.attached().join(", "),
        args.pin_path.display(),
        args.pin_path.display()
    );
    Ok(())
}
