//! Sockets to requests: the connection cap is taken before `accept` (excess clients wait in
//! the kernel, not in memory), a cap per client address (IPv6 clients by their /64; a
//! connection over it is closed as soon as it is accepted, so one address cannot take every
//! slot), TLS with ALPN, HTTP/1.1 and HTTP/2 through hyper-util's auto builder, a header-read
//! timeout, a body deadline (put on each request for [`crate::body`]), a write timeout for
//! clients that stop reading (`stall.rs`), and a graceful stop that lets in-flight requests
//! finish within the configured deadline. Requests go to [`crate::api::handle`].

mod stall;

use crate::api::Api;
use crate::body::BodyDeadline;
use crate::shutdown::Shutdown;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use stall::WriteTimeout;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

type Accepted = (TcpStream, SocketAddr, OwnedSemaphorePermit);

/// Serves `listeners` until `shutdown` fires, then drains for at most the configured time.
pub async fn serve(
    app: Api,
    listeners: Vec<TcpListener>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: Shutdown,
) {
    let config = app.config();
    let permits = Arc::new(Semaphore::new(connection_cap(config.max_connections)));
    let (accepted_tx, mut accepted) = mpsc::channel::<Accepted>(64);
    for listener in listeners {
        tokio::spawn(accept_loop(
            listener,
            permits.clone(),
            accepted_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(accepted_tx);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let per_client = Arc::new(PerClient::new(
        config.max_connections_per_client,
        &config.public.trusted_proxies,
    ));
    loop {
        tokio::select! {
            next = accepted.recv() => match next {
                Some((stream, peer, permit)) => {
                    let Some(slot) = per_client.admit(peer.ip()) else {
                        tracing::debug!(%peer, "over max_connections_per_client; closed");
                        app.metrics().refuse_connection();
                        continue;
                    };
                    let conn = Connection {
                        app: app.clone(),
                        builder: builder.clone(),
                        watcher: graceful.watcher(),
                        header_timeout: config.header_timeout,
                        body_timeout: config.body_timeout,
                        write_timeout: config.write_timeout,
                    };
                    tokio::spawn(conn.serve(stream, peer, acceptor.clone(), (permit, slot)));
                }
                None => break,
            },
            _ = shutdown.wait() => break,
        }
    }
    drop(accepted);
    tracing::info!(
        open = graceful.count(),
        "stopped accepting; letting requests finish"
    );
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    }
}

/// Descriptors kept free of client connections: the store, logs, engines' pipes, outbound
/// connections to engines and facilitators.
const RESERVED_FDS: u64 = 256;

/// The connection cap the open-file limit leaves room for. The soft limit is raised to the
/// hard one first: a login shell's 1024 would otherwise make `accept` fail (EMFILE) after
/// about a thousand connections, far below `max_connections`, and every new client would
/// wait in the kernel until one of them left. When the hard limit is still too low, the cap
/// is lowered to fit and the log says so.
fn connection_cap(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = limit.maximum,
            Err(err) => tracing::warn!(cause = %err, "could not raise the open-file limit"),
        }
    }
    let Some(soft) = soft else {
        return wanted;
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            serving = room.max(1),
            "the open-file limit is too low for server.max_connections; raise LimitNOFILE"
        );
    }
    wanted.min(room).max(1)
}

async fn accept_loop(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    accepted: mpsc::Sender<Accepted>,
    shutdown: Shutdown,
) {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        };
        let (stream, peer) = tokio::select! {
            result = listener.accept() => match result {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let _ = stream.set_nodelay(true);
        if accepted.send((stream, peer, permit)).await.is_err() {
            return;
        }
    }
}

/// Connections open per client address, for `server.max_connections_per_client`; IPv6
/// clients count by their /64, as the visitor routes' rate limits do
/// ([`crate::links::client_key`]), since one host usually holds a whole /64.
struct PerClient {
    /// 0: no cap.
    limit: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<String, usize>>,
}

/// One connection's place in [`PerClient`], given back when dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    /// None when the address is not counted.
    key: Option<String>,
}

impl PerClient {
    fn new(limit: usize, exempt: &[IpAddr]) -> PerClient {
        PerClient {
            limit,
            exempt: exempt.iter().map(IpAddr::to_canonical).collect(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a connection from `ip`, or None when that address holds its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        if self.limit == 0 || self.exempt.contains(&ip) {
            return Some(ClientSlot {
                table: self.clone(),
                key: None,
            });
        }
        let key = crate::links::client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            key: Some(key),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

struct Connection {
    app: Api,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
    body_timeout: Duration,
    write_timeout: Duration,
}

impl Connection {
    async fn serve(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        acceptor: Option<TlsAcceptor>,
        _held: (OwnedSemaphorePermit, ClientSlot),
    ) {
        let metrics = self.app.metrics().clone();
        metrics.add_connection(1);
        match acceptor {
            Some(acceptor) => {
                let stream = WriteTimeout::new(stream, self.write_timeout, metrics.clone());
                match tokio::time::timeout(self.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.serve_io(tls, peer).await,
                    Ok(Err(err)) => tracing::debug!(%peer, cause = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
            None => {
                // A client that connects and sends nothing never reaches hyper's header timer.
                let mut first = [0u8; 1];
                match tokio::time::timeout(self.header_timeout, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let stream = WriteTimeout::new(stream, self.write_timeout, metrics.clone());
                        self.serve_io(stream, peer).await
                    }
                    _ => tracing::debug!(%peer, "client sent nothing; dropped"),
                }
            }
        }
        metrics.add_connection(-1);
    }

    async fn serve_io<I>(self, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let deadline = BodyDeadline {
            timeout: self.body_timeout,
            metrics: app.metrics().clone(),
        };
        let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            request.extensions_mut().insert(deadline.clone());
            async move {
                let mut response = crate::api::handle(&app, request, peer).await;
                if response.status() == hyper::StatusCode::REQUEST_TIMEOUT {
                    // The rest of a late body is not worth waiting for.
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        if let Err(err) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, cause = %err, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_connection_cap_per_64() {
        let table = Arc::new(PerClient::new(1, &[]));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = table
            .admit(ip("2001:db8:1:2::1"))
            .expect("first of its /64");
        assert!(
            table.admit(ip("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        let other = table.admit(ip("2001:db8:1:3::1")).expect("another /64");
        assert!(table.admit(ip("127.0.0.1")).is_some());
        drop(first);
        assert!(table.admit(ip("2001:db8:1:2::7")).is_some(), "freed");
        drop(other);
    }
}
