//! A stand-in Kubernetes API server for the watcher's tests: list and watch
//! of namespaces, pods and networking.k8s.io networkpolicies over plain
//! HTTP, with the behaviours a real one shows a watcher: resourceVersions
//! on every change, watch events (ADDED, MODIFIED, DELETED) from a given
//! version, BOOKMARK events to clients that ask for them, `410 Gone` (as an
//! ERROR event) for a version older than what it keeps, dropped
//! connections (open watches, and every request during an outage), and
//! outages answered `503`. Every request is recorded, so a
//! test can check how the client behaved, not only what it ended up with.
//!
//! It runs on a thread of its own with its own runtime; its methods are
//! plain blocking calls, usable from any test.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

/// The resources served, by the path segment of their collection.
pub const RESOURCES: [&str; 3] = ["namespaces", "pods", "networkpolicies"];

fn resource_of_kind(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "namespaces",
        "Pod" => "pods",
        "NetworkPolicy" => "networkpolicies",
        other => panic!("the fake API server does not serve {other}"),
    }
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "namespaces" => ("Namespace", "v1"),
        "pods" => ("Pod", "v1"),
        "networkpolicies" => ("NetworkPolicy", "networking.k8s.io/v1"),
        other => panic!("unknown resource {other}"),
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub resource: &'static str,
    pub watch: bool,
    /// The `resourceVersion` parameter, if any.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    /// The Authorization header, as sent.
    pub authorization: Option<String>,
    /// The status answered (200, or 503 during an outage), 0 for a
    /// connection dropped instead of answered; a watch answered 410 Gone in
    /// its first event still has 200, with `gone` set.
    pub status: u16,
    pub gone: bool,
    pub at: Instant,
}

#[derive(Clone, Debug)]
enum Broadcast {
    Event {
        resource: &'static str,
        rv: u64,
        line: String,
    },
    Bookmark(u64),
    DropWatches,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// By (resource, "namespace/name").
    objects: BTreeMap<(&'static str, String), Value>,
    /// Every change, in order; watches replay it from their version.
    log: Vec<(u64, &'static str, String)>,
    /// Versions up to this one are forgotten: a watch from an older one is
    /// answered 410 Gone, as after etcd compaction.
    compacted: u64,
    refusing: Vec<&'static str>,
    dropping: Vec<&'static str>,
    requests: Vec<Request>,
    /// Nodes by name: served by GET and PATCH of `/api/v1/nodes/NAME` only
    /// (no list or watch: the agent reads its own Node and nothing else).
    nodes: BTreeMap<String, Value>,
    node_patches: Vec<NodePatch>,
    /// A taint another controller adds to a Node just before the next PATCH
    /// of it is judged: the patch's resourceVersion is then stale.
    race_next_patch: Option<Value>,
}

/// A PATCH of a Node as the server saw it.
#[derive(Clone, Debug)]
pub struct NodePatch {
    pub name: String,
    pub content_type: String,
    pub body: Value,
    /// 200, 404 for an unknown node, 409 for a stale resourceVersion, 415
    /// for a patch type other than a JSON merge patch.
    pub status: u16,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Broadcast>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Serves on a new port of 127.0.0.1.
    pub fn start() -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake API");
        FakeApi::start_on(listener)
    }

    /// Serves on `listener`, which may belong to another network namespace
    /// (the lab's node): the socket stays where it was made.
    pub fn start_on(listener: std::net::TcpListener) -> FakeApi {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1,
                ..Inner::default()
            }),
            events,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/api/v1/{resource}", get(serve))
            .route("/apis/networking.k8s.io/v1/{resource}", get(serve))
            .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = axum::serve(listener, app);
                tokio::select! {
                    r = server => r.expect("the fake API server failed"),
                    _ = stopped => {}
                }
            });
            // Open watch streams end with the runtime.
            rt.shutdown_background();
        });
        FakeApi {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server over plain HTTP.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: agent\n  user: {{token: fake-token}}\ncontexts:\n- name: fake\n  \
             context: {{cluster: fake, user: agent}}\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Creates or replaces an object (by kind, namespace and name): ADDED or
    /// MODIFIED to the watches of its resource. Returns its resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = obj["kind"]
            .as_str()
            .expect("an object with kind")
            .to_owned();
        let resource = resource_of_kind(&kind);
        let key = key_of(&obj);
        let mut inner = self.shared.lock();
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if inner.objects.insert((resource, key), obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(
            &mut inner,
            resource,
            rv,
            json!({"type": kind, "object": obj}),
        );
        rv
    }

    /// Deletes an object: DELETED (with its last state) to the watches.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let resource = resource_of_kind(kind);
        let mut inner = self.shared.lock();
        let mut obj = inner
            .objects
            .remove(&(resource, format!("{namespace}/{name}")))
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to delete"));
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(
            &mut inner,
            resource,
            rv,
            json!({"type": "DELETED", "object": obj}),
        );
        rv
    }

    fn record(&self, inner: &mut Inner, resource: &'static str, rv: u64, event: Value) {
        let line = format!("{event}\n");
        inner.log.push((rv, resource, line.clone()));
        // Sent under the lock: a watch starting now either replays it from
        // the log or receives it, never both, never neither.
        let _ = self
            .shared
            .events
            .send(Broadcast::Event { resource, rv, line });
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// A BOOKMARK with the current resourceVersion to every watch that
    /// allowed bookmarks: "nothing of yours changed up to here".
    pub fn bookmark(&self) -> u64 {
        let inner = self.shared.lock();
        let _ = self.shared.events.send(Broadcast::Bookmark(inner.rv));
        inner.rv
    }

    /// Forgets every version up to the current one: a watch from an older
    /// version gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.compacted = inner.rv;
        inner.log.clear();
    }

    /// Ends every open watch connection, as an API server restart or a load
    /// balancer would.
    pub fn drop_watches(&self) {
        let _inner = self.shared.lock();
        let _ = self.shared.events.send(Broadcast::DropWatches);
    }

    /// An outage of `resources` (all of them for `RESOURCES`): their open
    /// watches are dropped and every request is answered 503 until
    /// `set_refusing(&[])`.
    pub fn set_refusing(&self, resources: &[&'static str]) {
        let mut inner = self.shared.lock();
        inner.refusing = resources.to_vec();
        if !resources.is_empty() {
            let _ = self.shared.events.send(Broadcast::DropWatches);
        }
    }

    /// An outage of `resources` that drops connections: their open watches
    /// are cut mid-stream and every request gets its connection closed
    /// before any answer, until `set_dropping(&[])`.
    pub fn set_dropping(&self, resources: &[&'static str]) {
        let mut inner = self.shared.lock();
        inner.dropping = resources.to_vec();
        if !resources.is_empty() {
            let _ = self.shared.events.send(Broadcast::DropWatches);
        }
    }

    /// Creates or replaces a Node (by name), with a new resourceVersion.
    pub fn set_node(&self, mut node: Value) {
        let name = node["metadata"]["name"]
            .as_str()
            .expect("a node with a name")
            .to_owned();
        let mut inner = self.shared.lock();
        inner.rv += 1;
        node["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.nodes.insert(name, node);
    }

    /// A Node as it is now.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.shared.lock().nodes.get(name).cloned()
    }

    /// Before the next PATCH of a Node is judged, `taint` is added to it (a
    /// new resourceVersion), as another controller racing the patch would.
    pub fn race_next_node_patch(&self, taint: Value) {
        self.shared.lock().race_next_patch = Some(taint);
    }

    /// Every PATCH of a Node so far, in order.
    pub fn node_patches(&self) -> Vec<NodePatch> {
        self.shared.lock().node_patches.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The requests for one resource.
    pub fn requests_for(&self, resource: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.resource == resource)
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key_of(obj: &Value) -> String {
    let meta = &obj["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().expect("an object with metadata.name")
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

async fn get_node(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match shared.lock().nodes.get(&name) {
        Some(node) => json_ok(node),
        None => not_found_node(&name),
    }
}

/// A JSON merge patch (RFC 7386), the kind `kubectl patch --type merge`
/// sends; a `metadata.resourceVersion` in it must be the current one (409
/// Conflict otherwise), as a real API server checks it.
async fn patch_node(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = shared.lock();
    let mut record = NodePatch {
        name: name.clone(),
        content_type: content_type.clone(),
        body: patch.clone(),
        status: 200,
    };
    if let Some(taint) = inner.race_next_patch.take() {
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(node) = inner.nodes.get_mut(&name) {
            let taints = &mut node["spec"]["taints"];
            if !taints.is_array() {
                *taints = json!([]);
            }
            taints.as_array_mut().unwrap().push(taint);
            node["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
    }
    let current = inner.nodes.get(&name).cloned();
    let answer = match current {
        None => {
            record.status = 404;
            not_found_node(&name)
        }
        Some(_) if content_type != "application/merge-patch+json" => {
            record.status = 415;
            let msg = format!("the fake API server takes merge patches only, not {content_type}");
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                status(415, "UnsupportedMediaType", &msg).to_string(),
            )
                .into_response()
        }
        Some(node)
            if patch["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| Some(rv) != node["metadata"]["resourceVersion"].as_str()) =>
        {
            record.status = 409;
            let msg =
                "the object has been modified; please apply your changes to the latest version";
            (
                StatusCode::CONFLICT,
                status(409, "Conflict", msg).to_string(),
            )
                .into_response()
        }
        Some(mut node) => {
            merge_patch(&mut node, &patch);
            inner.rv += 1;
            node["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            inner.nodes.insert(name, node.clone());
            json_ok(&node)
        }
    };
    inner.node_patches.push(record);
    answer
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge_patch(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn json_ok(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn not_found_node(name: &str) -> Response {
    let msg = format!("nodes \"{name}\" not found");
    (
        StatusCode::NOT_FOUND,
        status(404, "NotFound", &msg).to_string(),
    )
        .into_response()
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(resource): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(resource) = RESOURCES.into_iter().find(|r| *r == resource) else {
        return (StatusCode::NOT_FOUND, "not served").into_response();
    };
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let resource_version = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u64>().expect("a numeric resourceVersion"));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let mut inner = shared.lock();
    let mut request = Request {
        resource,
        watch,
        resource_version,
        bookmarks,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 200,
        gone: false,
        at: Instant::now(),
    };
    let json_response = |code: StatusCode, body: Value| {
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    if inner.refusing.contains(&resource) {
        request.status = 503;
        inner.requests.push(request);
        let body = status(503, "ServiceUnavailable", "the fake API server is down");
        return json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    if inner.dropping.contains(&resource) {
        request.status = 0;
        inner.requests.push(request);
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::once(async {
                Err::<String, _>(std::io::Error::other("connection dropped"))
            })))
            .unwrap();
    }
    let (kind, api_version) = kind_of(resource);
    if !watch {
        inner.requests.push(request);
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((r, _), _)| *r == resource)
            .map(|(_, o)| o.clone())
            .collect();
        let list = json!({
            "kind": format!("{kind}List"), "apiVersion": api_version,
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": items,
        });
        return json_response(StatusCode::OK, list);
    }
    // A watch from a forgotten version: the API server answers 200 and a
    // single ERROR event carrying 410 Gone, then ends the stream.
    let from = resource_version.unwrap_or(inner.rv);
    if from < inner.compacted {
        request.gone = true;
        inner.requests.push(request);
        let msg = format!("too old resource version: {from} ({})", inner.compacted);
        let line = format!(
            "{}\n",
            json!({"type": "ERROR", "object": status(410, "Expired", &msg)})
        );
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(line))
            .unwrap();
    }
    inner.requests.push(request);
    let backlog: Vec<String> = inner
        .log
        .iter()
        .filter(|(rv, r, _)| *r == resource && *rv > from)
        .map(|(_, _, l)| l.clone())
        .collect();
    let mut rx = shared.events.subscribe();
    drop(inner);
    let stream = async_stream(move |tx: tokio::sync::mpsc::Sender<Line>| async move {
        for line in backlog {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        loop {
            let line = match rx.recv().await {
                Ok(Broadcast::Event {
                    resource: r,
                    rv,
                    line,
                }) if r == resource && rv > from => line,
                Ok(Broadcast::Event { .. }) => continue,
                Ok(Broadcast::Bookmark(rv)) if bookmarks => format!(
                    "{}\n",
                    json!({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": rv.to_string()},
                    }})
                ),
                Ok(Broadcast::Bookmark(_)) => continue,
                // Cut mid-stream, as a restarting API server or load
                // balancer does: the client sees a broken connection.
                Ok(Broadcast::DropWatches) => {
                    let _ = tx.send(Err(std::io::Error::other("dropped"))).await;
                    return;
                }
                // Too far behind to be trusted: end the watch, the client
                // watches again from its last version.
                Err(_) => return,
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A line of a watch body, or the error that breaks the connection.
type Line = Result<String, std::io::Error>;

/// Lines produced by `produce` as a body stream: the body ends when the
/// producer returns.
fn async_stream<F, Fut>(produce: F) -> impl futures_util::Stream<Item = Line>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Line>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Line>(16);
    tokio::spawn(produce(tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    })
}
