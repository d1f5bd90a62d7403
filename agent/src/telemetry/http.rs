//! The agent's HTTP endpoints. The network port (`--listen`) serves what a
//! scraper and the kubelet need: `/metrics`, `/healthz`, `/readyz`. Flows,
//! verdict events and the status tell who talks to whom on the node, and any
//! pod can reach a hostNetwork port, so they are served only on a unix socket
//! (`--socket`, 0600 in a directory only its owner can write), which also
//! serves everything the port does. Both bound the connections they serve at
//! once and answer more with 503, and `/events` bounds its subscribers.
use std::{
    convert::Infallible,
    fs::{self, DirBuilder},
    io,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::Path,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    serve::Listener,
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use log::info;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, UnixListener},
    sync::{broadcast, OwnedSemaphorePermit, Semaphore},
};

use super::{flows::read_flows, flows::FlowFilter, status::AgentState};

/// Port 9986: clear of the ports the common CNIs and node agents take on the
/// host network (Cilium 9962-9965, Calico 9091/9099, AWS VPC CNI
/// 61678/61679, kube-proxy 10249/10256, kubelet 10248/10250,
/// node-exporter 9100), and below the ephemeral range, so an outgoing
/// connection never holds it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9986";
pub const DEFAULT_SOCKET: &str = "/run/netpol-agent/agent.sock";

/// Connections the network port serves at once.
pub const NETWORK_CONNECTIONS_MAX: usize = 64;
/// Connections the unix socket serves at once.
pub const LOCAL_CONNECTIONS_MAX: usize = 16;
/// `/events` streams at once.
pub const EVENT_SUBSCRIBERS_MAX: usize = 8;
/// A client must have sent a request's headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A network connection is closed after this, busy or not: a scraper
/// reconnects, a client holding connections open does not keep them.
const NETWORK_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Refusals being written at once; past that, extra connections are closed
/// without an answer.
const REFUSALS_MAX: usize = 64;
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct App {
    agent: Arc<AgentState>,
    subscribers: Arc<Semaphore>,
}

/// How many connections a listener serves, and for how long.
struct Bounds {
    connections: usize,
    lifetime: Option<Duration>,
}

/// Binds `listen` and `socket` (so a busy port or socket fails start-up) and
/// serves until the agent exits.
pub async fn serve(
    listen: SocketAddr,
    socket: &Path,
    state: Arc<AgentState>,
) -> anyhow::Result<()> {
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --listen {listen} (is another agent running?)"))?;
    let unix = bind_socket(socket).with_context(|| format!("--socket {}", socket.display()))?;
    info!(
        "metrics and health on http://{}; flows, events and status only on {}",
        tcp.local_addr()?,
        socket.display()
    );
    let app = App {
        agent: state,
        subscribers: Arc::new(Semaphore::new(EVENT_SUBSCRIBERS_MAX)),
    };
    let network = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    let local = network
        .clone()
        .route("/flows", get(flows))
        .route("/events", get(events))
        .route("/status", get(status));
    tokio::spawn(serve_on(
        tcp,
        network.with_state(app.clone()),
        Bounds {
            connections: NETWORK_CONNECTIONS_MAX,
            lifetime: Some(NETWORK_CONNECTION_LIFETIME),
        },
    ));
    tokio::spawn(serve_on(
        unix,
        local.with_state(app),
        Bounds {
            connections: LOCAL_CONNECTIONS_MAX,
            // `/events` streams for as long as its client reads.
            lifetime: None,
        },
    ));
    Ok(())
}

/// Binds the unix socket, 0600, in a directory no one else can write (where
/// no one else could swap it). A socket left by an agent that died is
/// replaced; one an agent still answers on, or anything else, is not.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "{} must be a directory owned by uid {me} that no one else can write \
             (it is {}owned by uid {}, mode {:o})",
            dir.display(),
            if meta.is_dir() {
                ""
            } else {
                "not a directory, "
            },
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another agent answers on it");
            }
            fs::remove_file(path).context("removing the stale socket")?;
        }
        Ok(_) => bail!("it exists and is not a socket; not replacing it"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the agent exits, serving at most
/// `bounds.connections` at once.
async fn serve_on<L>(mut listener: L, app: Router, bounds: Bounds)
where
    L: Listener,
{
    let permits = Arc::new(Semaphore::new(bounds.connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_MAX));
    loop {
        let (io, _) = listener.accept().await;
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(io, app.clone(), bounds.lifetime, permit));
            }
            Err(_) => {
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(io, permit));
                }
            }
        }
    }
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    lifetime: Option<Duration>,
    _permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    // Errors are the client's (it went away, sent garbage, was too slow).
    match lifetime {
        Some(d) => {
            let _ = tokio::time::timeout(d, conn).await;
        }
        None => {
            let _ = conn.await;
        }
    }
}

/// Answers 503 to a connection over the bound. The request is read first
/// (a little of it, briefly), so that closing does not reset the
/// connection before the client has read the answer.
async fn refuse<I>(mut io: I, _permit: OwnedSemaphorePermit)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    const BODY: &str = "too many connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut request = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut request);
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf)).await?;
        let mut rest = answer.as_bytes();
        while !rest.is_empty() {
            let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, rest)).await?;
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await
    })
    .await;
}

fn error(code: StatusCode, e: impl std::fmt::Display) -> Response {
    (code, format!("{e}\n")).into_response()
}

/// Runs a map read off the event loop (listing a big LRU map takes a while).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    match blocking(move || crate::telemetry::metrics::render(&app.agent)).await {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(r) => r,
    }
}

async fn flows(
    State(app): State<App>,
    query: Result<Query<FlowFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(filter) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    // Checked before the maps are read; the records it does not keep are
    // dropped as they are read.
    let mut selection = match filter.selection() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let read = blocking(move || {
        let rules = app.agent.rules();
        read_flows(&app.agent.pinned, &rules, &mut selection)?;
        Ok(selection.into_records())
    })
    .await;
    match read {
        Ok(flows) => Json(flows).into_response(),
        Err(r) => r,
    }
}

async fn readyz(State(app): State<App>) -> Response {
    let status = app.agent.status();
    if status.ready {
        "ready\n".into_response()
    } else if status.policy_fallback {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the policy directory is rejected; the last good policy is enforced",
        )
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: programs not attached or no policy loaded",
        )
    }
}

async fn status(State(app): State<App>) -> Response {
    Json(app.agent.status()).into_response()
}

/// NDJSON stream of verdict events, one object per line, until the client
/// goes away. A client too slow to keep up skips events (and is told so).
async fn events(State(app): State<App>) -> Response {
    let Ok(permit) = app.subscribers.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{EVENT_SUBSCRIBERS_MAX} clients already follow the events"),
        );
    };
    let rx = app.agent.events.subscribe();
    // The permit goes with the stream, and comes back when the client does.
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        let line = match rx.recv().await {
            Ok(ev) => {
                let mut line = serde_json::to_string(&ev).unwrap_or_default();
                line.push('\n');
                line
            }
            Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"lagged\":{n}}}\n"),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(line), (rx, permit)))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
