//! The agent's HTTP endpoint: `/metrics`, `/flows`, `/events`, `/healthz`,
//! `/readyz`, `/status`.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use log::{info, warn};
use tokio::{net::TcpListener, sync::broadcast};

use super::{
    flows::{read_flows, FlowFilter},
    status::AgentState,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9965";

/// Binds `addr` (so a busy port fails start-up) and serves until the agent exits.
pub async fn serve(addr: SocketAddr, state: Arc<AgentState>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --listen {addr} (is another agent running?)"))?;
    info!(
        "observability endpoint on http://{}",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/flows", get(flows))
        .route("/events", get(events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("observability endpoint stopped: {e}");
        }
    });
    Ok(())
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

async fn metrics(State(state): State<Arc<AgentState>>) -> Response {
    match blocking(move || crate::telemetry::metrics::render(&state)).await {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(r) => r,
    }
}

async fn flows(
    State(state): State<Arc<AgentState>>,
    query: Result<Query<FlowFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(filter) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let read = blocking(move || {
        let rules = state.rules();
        read_flows(&state.pinned, &rules)
    })
    .await;
    match read {
        Ok(all) => match filter.apply(all) {
            Ok(flows) => Json(flows).into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        Err(r) => r,
    }
}

async fn readyz(State(state): State<Arc<AgentState>>) -> Response {
    if state.status().ready {
        "ready\n".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: programs not attached or no policy loaded",
        )
    }
}

async fn status(State(state): State<Arc<AgentState>>) -> Response {
    Json(state.status()).into_response()
}

/// NDJSON stream of verdict events, one object per line, until the client
/// goes away. A client too slow to keep up skips events (and is told so).
async fn events(State(state): State<Arc<AgentState>>) -> Response {
    let rx = state.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(ev) => {
                let mut line = serde_json::to_string(&ev).unwrap_or_default();
                line.push('\n');
                line
            }
            Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"lagged\":{n}}}\n"),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
