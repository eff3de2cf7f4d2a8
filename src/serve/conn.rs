//! The service's connections: accepting them with a bound per client, reading requests with
//! time limits, and stopping gracefully.
//!
//! A server on a network must not be held by whoever is slowest. So a request's head must
//! arrive within [`Timeouts::header`] (hyper's header read timeout, on a real timer), a body
//! must keep arriving (no gap longer than [`Timeouts::body`]: see `api::read_body`), and one
//! client address holds at most [`ConnectionLimits::per_client`] connections at once; beyond
//! that its new connections are closed at once, while other clients (and `/healthz`) are
//! served as usual. Idle keep-alive connections cost a task each and nothing else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

/// How long a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request's head (line and headers).
    pub header: Duration,
    /// Between two pieces of a request's body.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { header: Duration::from_secs(10), body: Duration::from_secs(30) }
    }
}

/// How many connections clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// At once, from one client address.
    pub per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { per_client: 256 }
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct Open(Mutex<HashMap<IpAddr, usize>>);

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, unless it holds `limit` already.
    fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot { open: self.clone(), ip })
    }
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` is notified; then stops accepting, asks every
/// connection to finish its request in flight, and returns once they have.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    timeouts: Timeouts,
    limits: ConnectionLimits,
    stop: Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    let open = Arc::new(Open::default());
    // Connections watch this to shut down gracefully; the server waits for them through the
    // `closed` half of the second channel.
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Infallible>(1);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.notified() => break,
        };
        let Some(slot) = open.admit(peer.ip(), limits.per_client) else {
            tracing::debug!(client = %peer.ip(), "connection refused: the client holds too many");
            drop(stream);
            continue;
        };
        let app = app.clone();
        let mut shutdown = shutdown_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            let service = TowerToHyperService::new(
                app.map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
            );
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.header).keep_alive(true);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!(client = %peer, "connection ended: {e}");
                    }
                    return;
                }
                _ = shutdown.changed() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                tracing::trace!(client = %peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(done_tx);
    // Every connection task holds a sender; `None` means all of them ended.
    let _ = done_rx.recv().await;
    Ok(())
}
