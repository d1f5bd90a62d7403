//! The running agent: what it holds once enforcement is live, and one handler
//! per event (a policy change, a Kubernetes change, a link event, the host
//! tick, the conntrack sweep). Every handler keeps the last good policy
//! enforced when it fails.
use std::{
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use log::{error, info, warn};
use tokio::signal::unix::Signal;

use super::{
    interfaces::{attached_status, reconcile},
    last_good::LastGood,
    policy_dir::{compile_dir, compile_sources},
    sources::Sources,
};
use crate::{
    cli::RunArgs,
    datapath::{Datapath, StableRuleIds},
    host::{dirwatch::DirWatch, hostaddrs, linkwatch::LinkWatch},
    kube::KubeView,
    policy::{self, Compiled},
    telemetry::status::AgentState,
};

/// Reload outcomes, kept for the status and metrics the agent reports.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub ok: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

/// The signals the agent answers: TERM and INT stop it, HUP reloads.
pub(super) struct Signals {
    pub term: Signal,
    pub int: Signal,
    pub hup: Signal,
}

pub(super) struct Agent {
    pub args: RunArgs,
    pub dp: Datapath,
    pub obs: Arc<AgentState>,
    pub rule_ids: StableRuleIds,
    /// Keeps identity ids, the entries they share and the parsed object
    /// files across reloads.
    pub compiler: super::policy_dir::Compiles,
    /// The node's addresses as last listed, and as the live policy has them.
    pub host: Vec<IpAddr>,
    pub applied_host: Vec<IpAddr>,
    /// `None` when the kernel refused a watch: SIGHUP and the host tick
    /// still reload, and the tick re-arms it.
    pub watch: Option<DirWatch>,
    /// The same for the Kubernetes objects directory, when there is one.
    pub objects_watch: Option<DirWatch>,
    /// With `--kubernetes`: the API server's view, synced before the first
    /// policy was compiled.
    pub kube: Option<KubeView>,
    pub links: Option<LinkWatch>,
    /// Pod interfaces, uplinks and pod addresses as the source check has them.
    pub sources: Sources,
    pub reloads: ReloadStats,
    pub last_good: LastGood,
    /// The last good policy's files while the agent enforces them because
    /// the policy directory was rejected at start; `None` once it compiles.
    pub fallback: Option<policy::Sources>,
}

/// What woke the agent up.
enum Event {
    Stop,
    Hangup,
    PolicyDirChanged(std::io::Result<()>),
    ObjectsChanged(std::io::Result<()>),
    KubeChanged,
    Link(std::io::Result<()>),
    HostTick,
    GcTick,
}

impl Agent {
    /// Handles events until TERM or INT. Enforcement outlives the loop: the
    /// pinned links keep the programs on every interface.
    pub async fn serve(mut self, mut sig: Signals) {
        let mut host_tick =
            tokio::time::interval(Duration::from_secs(self.args.host_refresh_secs.max(1)));
        let mut gc_tick =
            tokio::time::interval(Duration::from_secs(self.args.gc_interval_secs.max(1)));
        loop {
            let event = tokio::select! {
                _ = sig.term.recv() => Event::Stop,
                _ = sig.int.recv() => Event::Stop,
                _ = sig.hup.recv() => Event::Hangup,
                r = watched(&mut self.watch) => Event::PolicyDirChanged(r),
                r = watched(&mut self.objects_watch) => Event::ObjectsChanged(r),
                _ = kube_changed(&mut self.kube) => Event::KubeChanged,
                r = link_event(&mut self.links) => Event::Link(r),
                _ = host_tick.tick() => Event::HostTick,
                _ = gc_tick.tick() => Event::GcTick,
            };
            match event {
                Event::Stop => break,
                Event::Hangup => {
                    info!("SIGHUP: reloading {}", self.args.policy_dir.display());
                    self.reload();
                }
                Event::PolicyDirChanged(r) => self.on_policy_dir_changed(r),
                Event::ObjectsChanged(r) => self.on_objects_changed(r),
                Event::KubeChanged => self.on_kube_changed(),
                Event::Link(r) => self.on_link_event(r),
                Event::HostTick => self.on_host_tick(),
                Event::GcTick => self.on_gc_tick(),
            }
        }
        info!(
            "exiting; enforcement stays on {} (pinned under {}); \
             `netpol-agent uninstall --pin-path {}` removes it",
            self.dp.attached().join(", "),
            self.args.pin_path.display(),
            self.args.pin_path.display()
        );
    }

    fn on_policy_dir_changed(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            warn!("watching {}: {e}", self.args.policy_dir.display());
        }
        // Re-arm: the directory itself may have been replaced.
        self.watch = open_watch(&self.args.policy_dir);
        info!("{} changed: reloading", self.args.policy_dir.display());
        self.reload();
    }

    /// Workloads came, went or were relabelled: their addresses move between
    /// identities through the same atomic swap as a policy reload.
    fn on_objects_changed(&mut self, r: std::io::Result<()>) {
        let Some(dir) = self.args.kube_objects.clone() else {
            return;
        };
        if let Err(e) = r {
            warn!("watching {}: {e}", dir.display());
        }
        self.objects_watch = open_watch(&dir);
        info!("{} changed: reloading", dir.display());
        self.reload();
    }

    /// The API server reported a burst of changes (already debounced): the
    /// same reload as a change of the objects directory.
    fn on_kube_changed(&mut self) {
        let Some(view) = &self.kube else { return };
        let synced = view.synced();
        self.obs.update(|s| s.kubernetes_synced = Some(synced));
        info!("Kubernetes objects changed: reloading");
        self.reload();
    }

    fn on_link_event(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            warn!("link and route events: {e}; re-checking interfaces every few seconds");
            self.links = None;
        }
        self.reconcile_interfaces();
    }

    /// A safety net for lost link, route and directory events, and the poll
    /// of the node's addresses.
    fn on_host_tick(&mut self) {
        if self.watch.is_none() {
            self.watch = open_watch(&self.args.policy_dir);
        }
        if self.objects_watch.is_none() {
            if let Some(dir) = &self.args.kube_objects {
                self.objects_watch = open_watch(dir);
            }
        }
        self.reconcile_interfaces();
        match hostaddrs::discover() {
            Ok(now) if now != self.host => {
                info!("node addresses changed: {now:?}");
                self.host = now;
            }
            Ok(_) => {}
            Err(e) => warn!("listing the node's addresses: {e}"),
        }
        // Until a policy with the current addresses is live, retry: a failed
        // reload must not leave `host` stale for good.
        if self.host != self.applied_host {
            self.reload();
        }
    }

    fn on_gc_tick(&mut self) {
        let started = Instant::now();
        let result = self.dp.collect_expired();
        let deleted = result.as_ref().map_or(0, |s| s.conntrack);
        self.obs.own.swept(started.elapsed(), deleted as u64);
        match result {
            Ok(s) if s.conntrack + s.fragments == 0 => {}
            Ok(s) => info!(
                "conntrack: reclaimed {} expired entries ({} fragment entries)",
                s.conntrack, s.fragments
            ),
            Err(e) => warn!("conntrack sweep: {e}"),
        }
    }

    /// Sources first, then attachments: a new pod interface is checked
    /// (fails closed until its route appears) from its first packet.
    fn reconcile_interfaces(&mut self) {
        if let Err(e) = self.sources.refresh(&mut self.dp, &self.args) {
            warn!("source check not updated, will retry: {e:#}");
        }
        if let Err(e) = reconcile(
            &mut self.dp,
            &self.args.ifaces,
            self.args.ingress_hook,
            false,
        ) {
            warn!("{e:#}");
        }
        let now = attached_status(&self.dp);
        self.obs.update(|s| s.attached = now);
    }

    /// Compiles the policy directory and swaps it in; a policy that does not
    /// compile or apply leaves the last good one enforced. While the agent
    /// runs on the last good policy from disk, that policy is compiled again
    /// instead, so it follows the node's addresses and workloads.
    fn reload(&mut self) {
        let started = Instant::now();
        match self.apply_dir() {
            Ok((gen, compiled, cluster, sources)) => {
                self.learn_pods(cluster.as_ref());
                self.applied_host.clone_from(&self.host);
                self.reloads.ok += 1;
                self.reloads.last_error = None;
                self.obs.own.policy_live(Some(started.elapsed()));
                if self.fallback.take().is_some() {
                    info!(
                        "{} compiles again: the last good policy is replaced, ready",
                        self.args.policy_dir.display()
                    );
                }
                super::keep(&mut self.last_good, &sources);
                info!("policy generation {gen} enforced");
                if let Err(e) = self.obs.set_rules(&compiled) {
                    warn!("publishing rule names: {e:#}");
                }
            }
            Err(e) => {
                self.obs.own.reload_failed(started.elapsed());
                self.reloads.failed += 1;
                error!("{e} ({} failed reloads so far)", self.reloads.failed);
                self.reloads.last_error = Some(e);
                self.reapply_fallback();
            }
        }
        let gen = self.dp.config().policy_gen;
        let reloads = &self.reloads;
        let fallback = self.fallback.is_some();
        self.obs.update(|s| {
            s.ready = !fallback;
            s.policy_fallback = fallback;
            s.policy_generation = gen;
            s.reloads_succeeded = reloads.ok;
            s.reloads_failed = reloads.failed;
            s.last_reload_error.clone_from(&reloads.last_error);
        });
    }

    /// The pods this policy knows decide which routed addresses are owned:
    /// a pod that arrived may now send, and a deleted pod's address is owned
    /// by nobody from here on.
    fn learn_pods(&mut self, cluster: Option<&policy::Cluster>) {
        self.sources.learn_pods(cluster);
        if let Err(e) = self.sources.refresh(&mut self.dp, &self.args) {
            warn!("source check not updated, will retry: {e:#}");
        }
    }

    #[allow(clippy::type_complexity)]
    fn apply_dir(
        &mut self,
    ) -> Result<(u32, Compiled, Option<policy::Cluster>, policy::Sources), String> {
        let (mut c, cluster, sources) = compile_dir(
            &mut self.compiler,
            &self.args,
            &self.host,
            self.kube.as_ref(),
        )
        .map_err(|e| format!("reload rejected, previous policy stays: {e:#}"))?;
        self.rule_ids.renumber(&mut c);
        let gen = self
            .dp
            .apply(&c)
            .map_err(|e| format!("reload failed, previous policy stays: {e}"))?;
        Ok((gen, c, cluster, sources))
    }

    fn reapply_fallback(&mut self) {
        let Some(kept) = &self.fallback else { return };
        let applied = compile_sources(
            &mut self.compiler,
            &self.args,
            kept,
            &self.host,
            self.kube.as_ref(),
        )
        .and_then(|(mut c, cluster)| {
            self.rule_ids.renumber(&mut c);
            Ok((self.dp.apply(&c)?, c, cluster))
        });
        match applied {
            Ok((gen, compiled, cluster)) => {
                self.learn_pods(cluster.as_ref());
                self.applied_host.clone_from(&self.host);
                info!("policy generation {gen}: the last good policy, compiled again");
                if let Err(e) = self.obs.set_rules(&compiled) {
                    warn!("publishing rule names: {e:#}");
                }
            }
            Err(e) => warn!("the last good policy stays as it was: {e:#}"),
        }
    }
}

pub(super) fn open_watch(dir: &Path) -> Option<DirWatch> {
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

async fn kube_changed(view: &mut Option<KubeView>) {
    match view {
        Some(v) => v.changed().await,
        None => std::future::pending().await,
    }
}

async fn link_event(watch: &mut Option<LinkWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
