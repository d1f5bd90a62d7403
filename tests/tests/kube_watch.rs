//! The Kubernetes watcher (`netpol_agent::kube::KubeView`) against a
//! stand-in API server (`netpol_tests::fake_api`): what the watcher ends up
//! believing after each scenario a real API server produces, and how it
//! asked. No privileges needed.
use std::time::{Duration, Instant};

use netpol_agent::kube::{client_for, KubeView, Resource, FIRST_RETRY};
use netpol_agent::policy::Cluster;
use netpol_tests::fake_api::{FakeApi, RESOURCES};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn namespace(name: &str, tier: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"tier": tier, "kubernetes.io/metadata.name": name}}})
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                        // What the API server adds and the watcher drops.
                        "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
           "spec": {"nodeName": "node-a", "containers": [{"name": "main", "image": "x",
                    "ports": [{"name": "grpc", "containerPort": 50051, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn netpol(ns: &str, name: &str, app: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                    "ingress": [{"ports": [{"port": "grpc"}]}]}})
}

/// A fake server holding two namespaces, three pods and a NetworkPolicy.
fn seeded() -> FakeApi {
    let api = FakeApi::start();
    api.apply(namespace("shop", "app"));
    api.apply(namespace("ops", "infra"));
    api.apply(pod("shop", "web-0", "web", "10.0.0.10"));
    api.apply(pod("shop", "web-1", "web", "10.0.0.11"));
    api.apply(pod("ops", "otel-0", "otel", "10.0.1.10"));
    api.apply(netpol("shop", "web-ingress", "web"));
    api
}

fn view_of(api: &FakeApi) -> KubeView {
    let config = kube::Config::new(api.url().parse().unwrap());
    KubeView::start(
        client_for(config).unwrap(),
        "node-a".into(),
        Duration::from_millis(50),
    )
}

/// Waits (bounded) until `check` holds for the view, waking on its changes.
async fn until(view: &mut KubeView, what: &str, check: impl Fn(&KubeView) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check(view) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; the view holds {:?}",
            view.snapshot().map(|(c, f)| (summary(&c), f.len()))
        );
        tokio::select! {
            _ = view.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// (namespace/name, app label, addresses) of every pod.
fn summary(cluster: &Cluster) -> Vec<String> {
    cluster
        .pods
        .iter()
        .map(|p| {
            let app = p.labels.get("app").map_or("-", String::as_str);
            format!("{}/{} app={app} {:?}", p.namespace, p.name, p.ips)
        })
        .collect()
}

fn pods_are(view: &KubeView, expected: &[&str]) -> bool {
    view.snapshot()
        .map(|(c, _)| summary(&c) == expected)
        .unwrap_or(false)
}

fn netpols(view: &KubeView) -> Vec<String> {
    let (_, files) = view.snapshot().unwrap();
    files
        .iter()
        .flat_map(|f| {
            f.netpols
                .iter()
                .map(|n| format!("{}/{}", n.namespace, n.name))
        })
        .collect()
}

const SEEDED: [&str; 3] = [
    "ops/otel-0 app=otel [10.0.1.10]",
    "shop/web-0 app=web [10.0.0.10]",
    "shop/web-1 app=web [10.0.0.11]",
];

/// The initial lists give the whole view; then ADDED, MODIFIED and DELETED
/// events each change exactly what they name, for all three resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_then_follows_watch_events() {
    let api = seeded();
    let mut view = view_of(&api);
    until(&mut view, "synced", KubeView::synced).await;
    assert!(pods_are(&view, &SEEDED), "{:?}", view.snapshot());
    let (cluster, _) = view.snapshot().unwrap();
    assert_eq!(cluster.namespaces["shop"]["tier"], "app");
    assert_eq!(cluster.namespaces["ops"]["tier"], "infra");
    let web = cluster.pod("shop", "web-0").unwrap();
    assert_eq!(web.node_name.as_deref(), Some("node-a"));
    assert_eq!(web.ports.len(), 1, "named port read: {web:?}");
    assert_eq!(netpols(&view), ["shop/web-ingress"]);
    // One list per resource, then watches from the list's version, with
    // bookmarks asked for.
    for r in RESOURCES {
        let reqs = api.requests_for(r);
        assert_eq!(reqs.iter().filter(|q| !q.watch).count(), 1, "{r}: {reqs:?}");
        let w = reqs.iter().find(|q| q.watch).expect("a watch");
        assert!(w.bookmarks, "{r}: no allowWatchBookmarks");
        assert!(w.resource_version.is_some(), "{r}: watch without a version");
    }

    api.apply(pod("shop", "web-2", "web", "10.0.0.12"));
    until(&mut view, "web-2 is added", |v| {
        pods_are(
            v,
            &[
                SEEDED[0],
                SEEDED[1],
                SEEDED[2],
                "shop/web-2 app=web [10.0.0.12]",
            ],
        )
    })
    .await;

    // A relabel (MODIFIED) moves the pod, a DELETED removes one.
    api.apply(pod("shop", "web-0", "batch", "10.0.0.10"));
    api.delete("Pod", "shop", "web-1");
    until(&mut view, "web-0 relabelled and web-1 gone", |v| {
        pods_are(
            v,
            &[
                SEEDED[0],
                "shop/web-0 app=batch [10.0.0.10]",
                "shop/web-2 app=web [10.0.0.12]",
            ],
        )
    })
    .await;

    api.apply(namespace("shop", "frozen"));
    api.apply(netpol("ops", "otel-ingress", "otel"));
    api.delete("NetworkPolicy", "shop", "web-ingress");
    until(&mut view, "the namespace and policy changes", |v| {
        let (c, _) = v.snapshot().unwrap();
        c.namespaces["shop"]["tier"] == "frozen" && netpols(v) == ["ops/otel-ingress"]
    })
    .await;
    // Nothing listed again: all of it came by watch.
    for r in RESOURCES {
        let lists = api.requests_for(r).iter().filter(|q| !q.watch).count();
        assert_eq!(lists, 1, "{r} was listed again");
    }
}

/// Not synced until every resource's first list is in: the daemon enforces
/// nothing before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_synced_until_every_list_is_in() {
    let api = seeded();
    api.set_refusing(&["networkpolicies"]);
    let mut view = view_of(&api);
    until(&mut view, "namespaces and pods are listed", |v| {
        v.unsynced() == [Resource::NetworkPolicies]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!view.synced());
    assert!(api.requests_for("networkpolicies").len() >= 2, "no retry");
    api.set_refusing(&[]);
    until(&mut view, "synced", KubeView::synced).await;
    assert_eq!(netpols(&view), ["shop/web-ingress"]);
}

/// A BOOKMARK moves the watcher's resourceVersion on although none of its
/// objects changed: after a dropped connection it watches from the
/// bookmark's version, so a compaction up to it costs no new list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_move_the_resume_point() {
    let api = seeded();
    let mut view = view_of(&api);
    until(&mut view, "synced", KubeView::synced).await;
    let first_watch = api
        .requests_for("pods")
        .into_iter()
        .find(|q| q.watch)
        .unwrap();
    // Other resources move the global version on; pods see nothing of it.
    for i in 0..5 {
        api.apply(namespace(&format!("extra-{i}"), "app"));
    }
    let marked = api.bookmark();
    assert!(marked > first_watch.resource_version.unwrap());
    // Give the watcher the bookmark before the connection goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.compact();
    api.drop_watches();
    let deadline = Instant::now() + WAIT;
    let rewatch = loop {
        let watches: Vec<_> = api
            .requests_for("pods")
            .into_iter()
            .filter(|q| q.watch)
            .collect();
        if watches.len() >= 2 {
            break watches[1].clone();
        }
        assert!(Instant::now() < deadline, "pods were not watched again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rewatch.resource_version, Some(marked), "{rewatch:?}");
    assert!(!rewatch.gone, "the bookmark's version was still current");
    let lists = api.requests_for("pods").iter().filter(|q| !q.watch).count();
    assert_eq!(lists, 1, "pods were listed again despite the bookmark");
    // And it still follows events.
    api.apply(pod("ops", "otel-1", "otel", "10.0.1.11"));
    until(&mut view, "otel-1 arrives", |v| {
        v.snapshot()
            .map(|(c, _)| c.pod("ops", "otel-1").is_some())
            .unwrap_or(false)
    })
    .await;
}

/// A watch from a version the server has forgotten is answered 410 Gone:
/// the watcher lists again, and the new list replaces the old view, so a
/// pod deleted while it was away is gone and a relabel is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_and_replaces_the_view() {
    let api = seeded();
    let mut view = view_of(&api);
    until(&mut view, "synced", KubeView::synced).await;
    api.set_refusing(&RESOURCES);
    api.delete("Pod", "shop", "web-1");
    api.apply(pod("shop", "web-0", "batch", "10.0.0.10"));
    api.apply(pod("shop", "web-3", "web", "10.0.0.13"));
    api.delete("Namespace", "", "ops");
    api.compact();
    api.set_refusing(&[]);
    until(&mut view, "the relisted view", |v| {
        pods_are(
            v,
            &[
                SEEDED[0],
                "shop/web-0 app=batch [10.0.0.10]",
                "shop/web-3 app=web [10.0.0.13]",
            ],
        ) && v.synced()
            && !v.snapshot().unwrap().0.namespaces.contains_key("ops")
    })
    .await;
    let reqs = api.requests_for("pods");
    let gone = reqs
        .iter()
        .position(|q| q.gone)
        .unwrap_or_else(|| panic!("no watch was answered 410: {reqs:?}"));
    assert!(
        reqs[gone + 1..].iter().any(|q| !q.watch && q.status == 200),
        "no list after 410 Gone: {reqs:?}"
    );
}

/// Connections dropped during an outage (the open watches cut mid-stream,
/// then every request): the watcher retries with growing delays (no hot
/// loop), resumes from its last version once the server answers again (no
/// new list), and gets every event of the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_reconnects_with_back_off() {
    let api = seeded();
    let mut view = view_of(&api);
    until(&mut view, "synced", KubeView::synced).await;
    let outage = Instant::now();
    api.set_dropping(&RESOURCES);
    api.apply(pod("shop", "web-0", "batch", "10.0.0.10"));
    api.delete("Pod", "shop", "web-1");
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.set_dropping(&[]);
    until(&mut view, "the outage's events", |v| {
        pods_are(v, &[SEEDED[0], "shop/web-0 app=batch [10.0.0.10]"])
    })
    .await;
    assert!(view.synced());

    let reqs = api.requests_for("pods");
    let refused: Vec<Instant> = reqs
        .iter()
        .filter(|q| q.status == 0 && q.at >= outage)
        .map(|q| q.at)
        .collect();
    assert!(refused.len() >= 2, "no retry during the outage: {reqs:?}");
    assert!(refused.len() <= 8, "retried without back-off: {reqs:?}");
    let gaps: Vec<Duration> = refused.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= FIRST_RETRY, "first retry too soon: {gaps:?}");
    for w in gaps.windows(2) {
        // Doubling, each stretched by up to half: never shorter.
        assert!(w[1] > w[0], "delays do not grow: {gaps:?}");
    }
    // Resumed by watch: still one list, and the first successful request
    // after the outage is a watch from the version seen before it.
    assert_eq!(reqs.iter().filter(|q| !q.watch).count(), 1, "{reqs:?}");
    let resumed = reqs
        .iter()
        .find(|q| q.at >= outage && q.status == 200)
        .unwrap();
    assert!(resumed.watch && !resumed.gone, "{resumed:?}");
}
