//! The watched objects. One task per resource runs kube's watcher (list,
//! then watch from the list's resourceVersion; bookmarks move that version
//! on; 410 Gone starts a new list; errors retry after `RetryDelays`) and
//! files every object, already read by the policy module, under its
//! resource. A snapshot puts them together into a `Cluster` and the
//! NetworkPolicies.
use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use ::kube::{
    runtime::{utils::Backoff, watcher, WatchStreamExt as _},
    Api, Client, ResourceExt as _,
};
use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use log::{info, warn};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::policy::{self, Cluster, PolicyErrors, PolicyFile};

/// How long a change waits for more before the daemon hears of it: a
/// rollout changes many pods within a few milliseconds of each other, and
/// each reload recompiles the whole policy.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// The resources watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Namespaces,
    Pods,
    NetworkPolicies,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::Namespaces,
        Resource::Pods,
        Resource::NetworkPolicies,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Namespaces => "namespaces",
            Resource::Pods => "pods",
            Resource::NetworkPolicies => "networkpolicies",
        })
    }
}

/// One object as the policy reader saw it when it arrived.
type Parsed = Result<(Cluster, Option<PolicyFile>), PolicyErrors>;

#[derive(Default)]
struct Store {
    /// Per resource, by "namespace/name", in a stable order.
    objects: [BTreeMap<String, Parsed>; 3],
    /// Whether the resource's last list completed (false before the first
    /// one, and while a list is redone after 410 Gone).
    synced: [bool; 3],
}

/// The Kubernetes view: what the API server says, kept current.
pub struct KubeView {
    store: Arc<Mutex<Store>>,
    changes: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
    node_name: String,
}

impl KubeView {
    /// Starts watching the three resources with `client`. Changes are
    /// announced by `changed`, `debounce` after the first of a burst.
    pub fn start(client: Client, node_name: String, debounce: Duration) -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let (bump, bumped) = watch::channel(0u64);
        let (notify, changes) = mpsc::channel(1);
        let tasks = vec![
            tokio::spawn(follow::<Namespace>(
                Api::all(client.clone()),
                Resource::Namespaces,
                store.clone(),
                bump.clone(),
            )),
            tokio::spawn(follow::<Pod>(
                Api::all(client.clone()),
                Resource::Pods,
                store.clone(),
                bump.clone(),
            )),
            tokio::spawn(follow::<NetworkPolicy>(
                Api::all(client),
                Resource::NetworkPolicies,
                store.clone(),
                bump,
            )),
            tokio::spawn(debounced(bumped, notify, debounce)),
        ];
        Self {
            store,
            changes,
            tasks,
            node_name,
        }
    }

    /// The node this agent runs on.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Whether every resource's list has completed.
    pub fn synced(&self) -> bool {
        self.lock().synced.iter().all(|s| *s)
    }

    /// The resources whose list has not completed yet.
    pub fn unsynced(&self) -> Vec<Resource> {
        let store = self.lock();
        Resource::ALL
            .into_iter()
            .filter(|r| !store.synced[r.index()])
            .collect()
    }

    /// Waits for the next burst of changes (or a change of `synced`).
    /// Cancel-safe: a change is never lost when the wait is dropped.
    pub async fn changed(&mut self) {
        if self.changes.recv().await.is_none() {
            // The watch tasks only end when the view is dropped.
            std::future::pending::<()>().await;
        }
    }

    /// The workloads and NetworkPolicies as last seen. Objects the policy
    /// reader refused are all reported, named `kubernetes:RESOURCE/NS/NAME`.
    pub fn snapshot(&self) -> Result<(Cluster, Vec<PolicyFile>), PolicyErrors> {
        let store = self.lock();
        policy::objects_from_parts(store.objects.iter().flat_map(|m| m.values().cloned()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for KubeView {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads one object the way an objects file is read: its JSON (which is
/// YAML) through the policy module's reader. managedFields is dropped first:
/// it is bookkeeping of the API server, often larger than the object.
fn parse<K: ::kube::Resource + Serialize>(resource: Resource, mut obj: K) -> (String, Parsed) {
    obj.meta_mut().managed_fields = None;
    let key = key_of(&obj);
    let name = format!("kubernetes:{resource}/{key}");
    let parsed = match serde_json::to_string(&obj) {
        Ok(text) => policy::parse_object_text(&name, &text),
        Err(e) => Err(policy::PolicyError::file(&name, format!("cannot encode: {e}")).into()),
    };
    (key, parsed)
}

/// Namespaces have no namespace: their key is "/name".
fn key_of<K: ::kube::Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Follows one resource until the view is dropped.
async fn follow<K>(
    api: Api<K>,
    resource: Resource,
    store: Arc<Mutex<Store>>,
    bump: watch::Sender<u64>,
) where
    K: ::kube::Resource + Clone + DeserializeOwned + Serialize + fmt::Debug + Send + 'static,
{
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    let changed = || bump.send_modify(|n| *n += 1);
    let stream = watcher(api, watcher::Config::default()).backoff(RetryDelays::default());
    let mut stream = std::pin::pin!(stream);
    // A list's objects are gathered here and replace the resource's objects
    // only once it is complete: until then the last complete view holds.
    let mut listing: Option<BTreeMap<String, Parsed>> = None;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The stream retries by itself, after a growing delay.
                warn!("Kubernetes API: watching {resource}: {e}; retrying");
                failing = true;
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            info!("Kubernetes API: watching {resource} again");
        }
        match event {
            watcher::Event::Init => {
                listing = Some(BTreeMap::new());
                let mut s = lock();
                if std::mem::replace(&mut s.synced[resource.index()], false) {
                    drop(s);
                    info!("Kubernetes API: listing {resource} again");
                    changed();
                }
            }
            watcher::Event::InitApply(obj) => {
                let (key, parsed) = parse(resource, obj);
                listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, parsed);
            }
            watcher::Event::InitDone => {
                let objects = listing.take().unwrap_or_default();
                info!("Kubernetes API: {} {resource} listed", objects.len());
                let mut s = lock();
                s.objects[resource.index()] = objects;
                s.synced[resource.index()] = true;
                drop(s);
                changed();
            }
            watcher::Event::Apply(obj) => {
                let (key, parsed) = parse(resource, obj);
                lock().objects[resource.index()].insert(key, parsed);
                changed();
            }
            watcher::Event::Delete(obj) => {
                lock().objects[resource.index()].remove(&key_of(&obj));
                changed();
            }
        }
    }
}

/// The delays between attempts while the API server fails: from
/// `FIRST_RETRY`, doubling up to `MAX_RETRY`, each stretched by up to half
/// at random so that the agents of every node do not retry in step after an
/// API server restart. Any successful event starts over.
struct RetryDelays {
    next: Duration,
    seed: u64,
}

pub const FIRST_RETRY: Duration = Duration::from_millis(500);
pub const MAX_RETRY: Duration = Duration::from_secs(30);

impl Default for RetryDelays {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            next: FIRST_RETRY,
            seed: u64::from(nanos) | 1,
        }
    }
}

impl Iterator for RetryDelays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: jitter needs spread, not quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        let stretch = (self.seed % 1000) as u32;
        Some(delay + delay * stretch / 2000)
    }
}

impl Backoff for RetryDelays {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// One notification per burst: the first change of a burst starts the
/// delay, everything until it ends is covered by the same notification
/// (the reader takes its snapshot after it).
async fn debounced(mut bumped: watch::Receiver<u64>, notify: mpsc::Sender<()>, delay: Duration) {
    while bumped.changed().await.is_ok() {
        tokio::time::sleep(delay).await;
        bumped.borrow_and_update();
        // Full means a notification is already waiting: it covers this one.
        if let Err(mpsc::error::TrySendError::Closed(())) = notify.try_send(()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_start_over() {
        let mut d = RetryDelays::default();
        let first: Vec<Duration> = d.by_ref().take(8).collect();
        let mut base = FIRST_RETRY;
        for got in &first {
            assert!(
                *got >= base && *got <= base + base / 2,
                "{got:?} for {base:?}"
            );
            base = (base * 2).min(MAX_RETRY);
        }
        assert!(first[7] >= MAX_RETRY);
        d.reset();
        assert!(d.next().unwrap() <= FIRST_RETRY + FIRST_RETRY / 2);
    }
}
