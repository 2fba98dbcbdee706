//! The ceiling: a minimal hyper HTTP/1.1 server inside the bench process that answers every
//! request with the same small JSON body, to show what the machine and the client can do.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// About 200 bytes, roughly one small API answer.
const BODY: &str = r#"{"id":"01JBENCH0000000000000000","agent_name":"echo","username":"admin","status":"active","started_at":"2026-01-01T00:00:00.000Z","message_count":20,"total_cost_usd":0.0,"title":"ceiling of this machine"}"#;

/// The running ceiling server; dropping it does not stop it, [`Ceiling::stop`] does.
pub struct Ceiling {
    pub addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl Ceiling {
    /// Binds `127.0.0.1:0` and serves until stopped.
    pub async fn start() -> anyhow::Result<Ceiling> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Ceiling { addr, accept_loop })
    }

    /// Stops accepting; open connections end when their clients close them.
    pub fn stop(self) {
        self.accept_loop.abort();
    }
}
