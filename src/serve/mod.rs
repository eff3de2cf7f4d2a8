//! `envbuild serve`: the snapshot cache service for orchestrators and CI.
//!
//! The service is stateless over one store: everything it knows is read from the store per
//! request (with an in-memory cache of manifests, which are immutable), so any number of
//! replicas can sit behind a load balancer with S3 as the only state. It owns:
//!
//! - [`api`]: the `/v1` API (the object protocol of the `http://` store, keys, manifests,
//!   chunks, tar streams), described by `docs/openapi.json`;
//! - [`registry`]: the read side of the OCI distribution API at `/v2/`, so image clients pull
//!   snapshots;
//! - [`browse`]: the snapshot browser, server-rendered HTML at `/`;
//! - [`auth`]: bearer tokens with roles, from a file of their hashes;
//! - [`metrics`]: Prometheus metrics at `/metrics`; `/healthz` answers while the process runs;
//! - [`conn`]: accepting connections, a bound per client, time limits on reading requests;
//! - [`error`]: public error messages, details to the log;
//! - `manifests`: the in-memory cache of manifests.
//!
//! Bodies stream: a tar stream is sent chunk by chunk as chunks are verified, and request
//! bodies are bounded by what their path may hold (a chunk's zstd bound, `--max-manifest`,
//! `--max-object`) before they are read. On SIGINT or SIGTERM the server stops accepting,
//! lets requests in flight finish for up to `--shutdown-grace`, then exits.

pub mod api;
pub mod auth;
pub mod browse;
pub mod conn;
pub mod error;
mod manifests;
pub mod metrics;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{SnapshotId, Store, restore};
use tracing::Instrument;

use self::auth::{Role, Tokens};
use self::error::ApiError;
use self::metrics::Metrics;

/// The service could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("{path}:{line}: expected `sha256:<64 hex digits> read|write|admin [label]`")]
    BadTokenLine { path: std::path::PathBuf, line: usize },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
        let context = context.into();
        move |source| ServeError::Io { context, source }
    }
}

/// How large request bodies may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A manifest (`PUT /v1/snapshots/{id}`).
    pub manifest: u64,
    /// Any other object that is not a chunk or a record.
    pub object: u64,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    pub shutdown_grace: Duration,
    /// Bytes of manifests kept in memory.
    pub manifest_cache_bytes: usize,
    pub timeouts: conn::Timeouts,
    pub connections: conn::ConnectionLimits,
}

/// What every request can reach.
#[derive(Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Longest gap allowed between two pieces of a request body.
    pub body_timeout: Duration,
    manifests: manifests::ManifestCache,
    images: registry::ImageCache,
}

impl AppState {
    /// The manifest of `id`, verified, from the cache or the store.
    pub async fn manifest(&self, id: &SnapshotId) -> Result<Arc<Manifest>, ApiError> {
        if let Some(manifest) = self.manifests.get(id) {
            self.metrics.manifest_cache(true);
            return Ok(manifest);
        }
        self.metrics.manifest_cache(false);
        let manifest = Arc::new(restore::read_manifest(&*self.store, id).await?);
        self.manifests.insert(*id, manifest.clone());
        Ok(manifest)
    }
}

/// The whole application: API, browser, health and metrics, with auth and observation.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .merge(api::routes())
        .merge(browse::routes())
        .merge(registry::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
            }),
        )
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            if is_registry(uri.path()) {
                return registry::elsewhere(method).await.into_response();
            }
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_route",
                "there is no such route; see /v1/openapi.json",
            )
            .into_response()
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The role a request needs: reads `read`; writes `write`; deletions `admin`, except of the
/// writer's own leases (a writer releases its lease by deleting it). The registry at `/v2`
/// is read-only whatever the method (it refuses writes itself), so `read` reaches it.
fn needed_role(method: &Method, path: &str) -> Role {
    if is_registry(path) {
        return Role::Read;
    }
    match *method {
        Method::GET | Method::HEAD => Role::Read,
        Method::DELETE if path.starts_with(&format!("/v1/objects/{}", envbuild_cache::layout::LEASES)) => {
            Role::Write
        }
        Method::DELETE => Role::Admin,
        _ => Role::Write,
    }
}

fn is_registry(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// Checks the request's token against the role it needs ([`needed_role`]). Without a valid
/// token: 401, asking browsers for Basic credentials on the browser's pages; with a token of
/// a lesser role: 403, naming the role needed.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let needed = needed_role(request.method(), request.uri().path());
    let role = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::token_from_header)
        .and_then(|token| state.tokens.role_of(&token));
    let registry = is_registry(request.uri().path());
    match role {
        Some(role) if role >= needed => next.run(request).await,
        None if registry => {
            let mut response = registry::RegistryError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "a read token is required, as the password (any user name) or a Bearer token",
            )
            .into_response();
            // Basic, because it is what `docker login`, containerd and skopeo all answer
            // with the credentials they were given, without a token service.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"envbuild\""));
            response
        }
        Some(role) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a `{}` token may not do this; it needs the `{}` role", role.as_str(), needed.as_str()),
        )
        .into_response(),
        None => {
            let browser = !request.uri().path().starts_with("/v1/");
            let mut response = if browser {
                browse::unauthorized()
            } else {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid token is required (Authorization: Bearer <token>)",
                )
                .into_response()
            };
            let challenge = if browser {
                "Basic realm=\"envbuild\", charset=\"UTF-8\""
            } else {
                "Bearer realm=\"envbuild\""
            };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
    }
}

/// Gives each request an id (`X-Request-Id`, and a log span), and counts it: status,
/// latency to the response head, and body bytes as they are actually sent.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("request", id = %id, method = %method, path = %request.uri().path());
    let started = Instant::now();
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    state.metrics.request_started();
    let body_read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let request = {
        let metrics = state.metrics.clone();
        let route = route.clone();
        let body_read = body_read.clone();
        request.map(|body| {
            let mut counting = Counting::new(body, move |n| metrics.request_bytes(&route, n));
            counting.finished = Some(body_read);
            Body::new(counting)
        })
    };
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.metrics.request_finished(&route, &method, status, started.elapsed());
    span.in_scope(|| tracing::debug!(status, elapsed_ms = started.elapsed().as_millis(), "answered"));
    let (mut parts, body) = response.into_parts();
    // A body left partly unread (a refused request) means the connection cannot carry another
    // request: say so, or a client would reuse it and see it reset.
    if has_body && !body_read.load(std::sync::atomic::Ordering::Relaxed) {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        parts.headers.insert("x-request-id", value);
    }
    let metrics = state.metrics.clone();
    Response::from_parts(parts, Body::new(Counting::new(body, move |n| metrics.response_bytes(&route, n))))
}

/// A body that reports the size of each data frame passing through, and keeps the inner
/// body's size hint (so a known length is still sent as `Content-Length`).
struct Counting<F> {
    inner: Body,
    count: F,
    /// Set once the body has been read to its end.
    finished: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl<F: Fn(u64)> Counting<F> {
    fn new(inner: Body, count: F) -> Self {
        Self { inner, count, finished: None }
    }
}

impl<F: Fn(u64) + Unpin> http_body::Body for Counting<F> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    (self.count)(data.len() as u64);
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(finished) = &self.finished {
                    finished.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `store` on `listener` until `shutdown` completes, then stops accepting and lets
/// requests in flight finish for up to the grace period.
pub async fn run(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    store: Arc<dyn Store>,
    tokens: Tokens,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let watcher = tokens.watch();
    let state = Arc::new(AppState {
        store,
        tokens,
        metrics: Arc::new(Metrics::default()),
        limits: options.limits,
        body_timeout: options.timeouts.body,
        manifests: manifests::ManifestCache::new(options.manifest_cache_bytes),
        images: registry::ImageCache::default(),
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = conn::serve(listener, app(state), options.timeouts, options.connections, stop.clone());
    let mut task = tokio::spawn(server);
    let result = tokio::select! {
        done = &mut task => done,
        () = shutdown => {
            tracing::warn!(grace = ?options.shutdown_grace, "shutting down: no new connections; finishing requests in flight");
            stop.notify_one();
            if let Ok(done) = tokio::time::timeout(options.shutdown_grace, &mut task).await {
                done
            } else {
                tracing::warn!("requests still in flight after the grace period were cut off");
                task.abort();
                Ok(Ok(()))
            }
        }
    };
    watcher.abort();
    match result {
        Ok(served) => served.map_err(ServeError::io("the server failed")),
        Err(e) => Err(ServeError::io("the server task failed")(std::io::Error::other(e))),
    }
}

/// SIGINT and SIGTERM, listened for from creation on: create it before announcing the address,
/// so a supervisor that stops the server as soon as it is up still gets a graceful stop.
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn new() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(ServeError::io("cannot listen for SIGINT"))?,
            terminate: signal(SignalKind::terminate())
                .map_err(ServeError::io("cannot listen for SIGTERM"))?,
        })
    }

    /// Completes at the first SIGINT or SIGTERM.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
