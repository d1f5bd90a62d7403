//! How the commands that talk to a running agent (`monitor`, `status`) reach
//! it: HTTP on its root-only unix socket (flows, events and status are not
//! served on the network port). The one place that knows the transport.
use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::cli::AgentEndpoint;

/// How long the agent has to accept the connection and answer a request's
/// head (a document's body too): it answers at once when it runs.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` on a runtime of its own: the commands are synchronous, and one
/// thread is enough to talk to one agent.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

pub struct AgentClient {
    socket: PathBuf,
    /// How errors name the agent: its socket's path.
    endpoint: String,
}

impl AgentClient {
    pub fn new(agent: &AgentEndpoint) -> Self {
        Self {
            socket: agent.socket.clone(),
            endpoint: agent.socket.display().to_string(),
        }
    }

    /// GET `path`, accepting `accept`; the response once its head arrived,
    /// its body still streaming. Anything but 200 OK is an error.
    pub async fn get(&self, path: &str, accept: &str) -> anyhow::Result<hyper::Response<Incoming>> {
        let endpoint = &self.endpoint;
        let hint = || {
            format!(
                "connecting to {endpoint} (is the agent running with --socket {endpoint}, and are you root?)"
            )
        };
        let stream = match tokio::time::timeout(TIMEOUT, UnixStream::connect(&self.socket)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(anyhow::Error::from(e).context(hint())),
            Err(_) => {
                let e = anyhow::anyhow!("no answer within {} s", TIMEOUT.as_secs());
                return Err(e.context(hint()));
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("talking HTTP to {endpoint}"))?;
        // Drives the connection for as long as the body is read.
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, accept)
            .body(Empty::<Bytes>::new())?;
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .with_context(|| format!("{endpoint} did not answer {path}"))?
            .with_context(|| format!("GET {path} from {endpoint}"))?;
        if response.status() != hyper::StatusCode::OK {
            bail!("{endpoint} answered {} to GET {path}", response.status());
        }
        Ok(response)
    }

    /// GET `path`'s JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.get(path, "application/json").await?;
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .with_context(|| format!("{} did not finish {path}", self.endpoint))?
            .with_context(|| format!("reading {path} from {}", self.endpoint))?
            .to_bytes();
        serde_json::from_slice(&body)
            .with_context(|| format!("{path} from {} is not the document expected", self.endpoint))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Serves one connection with `response` (status line, headers, body)
    /// and hands back the request it read.
    fn serve_once(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let dir = std::env::temp_dir().join(format!(
            "netpol-client-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let addr = path.display().to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(response.as_bytes()).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (addr, handle)
    }

    fn client(endpoint: &str) -> AgentClient {
        AgentClient::new(&AgentEndpoint {
            socket: PathBuf::from(endpoint),
        })
    }

    #[test]
    fn reads_a_json_document() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"ready\":true}\n",
        );
        let doc: serde_json::Value = block_on(client(&addr).get_json("/status"))
            .unwrap()
            .unwrap();
        assert_eq!(doc, serde_json::json!({"ready": true}));
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /status HTTP/1.1\r\n"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("accept: application/json"),
            "{request}"
        );
    }

    #[test]
    fn errors_say_what_failed() {
        let (addr, server) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = block_on(client(&addr).get_json::<serde_json::Value>("/status"))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("{addr} answered 503 Service Unavailable to GET /status")
        );
        server.join().unwrap();

        // Nothing listens there any more.
        let free = std::env::temp_dir()
            .join(format!("netpol-client-none-{}", std::process::id()))
            .join("agent.sock")
            .display()
            .to_string();
        let err = block_on(client(&free).get_json::<serde_json::Value>("/status"))
            .unwrap()
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!(
                "connecting to {free} (is the agent running with --socket {free}, and are you root?): "
            )),
            "{text}"
        );
    }
}
