//! What the agent reports about itself: shared between the main loop (which
//! writes it) and the HTTP endpoint (which reads it).
use std::sync::{Mutex, RwLock};

use tokio::sync::broadcast;

use super::events::EventRecord;
use crate::{bpffs::Pinned, datapath::RuleInfo};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Attached {
    pub interface: String,
    /// What judges traffic entering the interface: `xdp-native`,
    /// `xdp-generic` or `tcx`; egress is always TCX.
    pub hook: String,
}

/// The `/status` document. `netpol-agent status` reads it back; a field
/// an older agent does not send is left at its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Status {
    /// `enforce` or `audit`.
    pub mode: String,
    /// Programs attached and the policy directory's policy live.
    pub ready: bool,
    /// The policy directory was rejected when the agent started and the
    /// last good policy kept on the node's disk is enforced instead (not
    /// ready until the directory compiles).
    pub policy_fallback: bool,
    /// Generation of the live policy (0 before the first one).
    pub policy_generation: u32,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// Error of the last reload, cleared by the next good one.
    pub last_reload_error: Option<String>,
    pub attached: Vec<Attached>,
    /// With `--kubernetes`: whether every watched resource's list from the
    /// API server has completed (false while one is redone); null without.
    pub kubernetes_synced: Option<bool>,
    /// Hash of the live policy's content (16 hex digits): equal on every
    /// node enforcing the same policy, whatever the files' order or the
    /// generation (see `Compiled::content_hash`).
    pub policy_hash: String,
}

pub struct AgentState {
    pub pinned: Pinned,
    pub status: Mutex<Status>,
    /// Names of the live policy's rules, by id.
    pub rules: RwLock<Vec<RuleInfo>>,
    /// Verdict events from the ring buffer, fanned out to `/events` clients.
    pub events: broadcast::Sender<EventRecord>,
    /// Per-flow series `/metrics` may add (the busiest flows); 0 for none.
    pub top_flows: usize,
    /// What the agent measures about itself across scrapes (reloads,
    /// sweeps, evictions seen).
    pub own: super::metrics::OwnMetrics,
}

impl AgentState {
    pub fn new(pinned: Pinned, mode: &str, top_flows: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            pinned,
            status: Mutex::new(Status {
                mode: mode.to_owned(),
                ..Status::default()
            }),
            rules: RwLock::new(Vec::new()),
            events,
            top_flows,
            own: super::metrics::OwnMetrics::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes the live policy's rule names (to the pinned map for the CLI
    /// and here for events).
    pub fn set_rules(&self, compiled: &crate::policy::Compiled) -> anyhow::Result<()> {
        crate::datapath::publish_rule_names(&self.pinned, compiled)?;
        let rules = compiled
            .rule_names
            .iter()
            .zip(compiled.rule_audit.iter())
            .map(|(n, a)| RuleInfo {
                name: n.clone(),
                audit: *a,
            })
            .collect();
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
        let hash = compiled.content_hash();
        self.update(|s| s.policy_hash = hash);
        Ok(())
    }
}
