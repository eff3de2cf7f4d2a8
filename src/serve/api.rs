//! The `/v1` API: the object protocol every store operation maps to, and the views
//! orchestrators use (keys, manifests, chunks, a snapshot's tar stream).
//!
//! `docs/openapi.json` describes every operation; [`ENDPOINTS`] is the list the router is
//! built from, and a test keeps the two equal. Objects are read and written through the
//! server's store exactly as the store promises (create-only, compare-and-swap), and every
//! write passes [`admission::check`] first. Content-addressed objects (chunks, manifests, tar
//! streams) carry their digest as a strong `ETag` and may be cached for a year; the others
//! carry the store's ETag and must be revalidated.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use bytes::Bytes;
use envbuild_cache::admission;
use envbuild_cache::catalog::{self, KeyRecord};
use envbuild_cache::layout::{self, ObjectPath};
use envbuild_cache::manifest::{MAX_CHUNK_BYTES, zstd_bound};
use envbuild_cache::restore;
use envbuild_cache::store::{PutMode, PutOutcome};
use envbuild_cache::{Digest, SnapshotId};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;

/// Every operation of the API as (method, path in OpenAPI syntax). The router is built from
/// this list, and a test compares it with `docs/openapi.json`.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/v1/objects"),
    ("GET", "/v1/objects/{path}"),
    ("HEAD", "/v1/objects/{path}"),
    ("PUT", "/v1/objects/{path}"),
    ("DELETE", "/v1/objects/{path}"),
    ("GET", "/v1/chunks/{digest}"),
    ("HEAD", "/v1/chunks/{digest}"),
    ("PUT", "/v1/chunks/{digest}"),
    ("GET", "/v1/snapshots/{id}"),
    ("HEAD", "/v1/snapshots/{id}"),
    ("PUT", "/v1/snapshots/{id}"),
    ("GET", "/v1/snapshots/{id}/rootfs.tar"),
    ("HEAD", "/v1/snapshots/{id}/rootfs.tar"),
    ("GET", "/v1/keys/{key}"),
    ("HEAD", "/v1/keys/{key}"),
    ("PUT", "/v1/keys/{key}"),
    ("GET", "/v1/openapi.json"),
];

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// A year: content-addressed objects never change.
const IMMUTABLE: &str = "max-age=31536000, immutable";
/// Mutable objects: cache, but ask every time.
const REVALIDATE: &str = "no-cache";
/// Chunks of a tar stream fetched at once.
const TAR_CONCURRENCY: usize = 4;

/// The API routes, from [`ENDPOINTS`].
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    let mut paths: Vec<&str> = ENDPOINTS.iter().map(|(_, path)| *path).collect();
    paths.dedup();
    for path in paths {
        let mut methods: MethodRouter<Arc<AppState>> = MethodRouter::new();
        for (method, _) in ENDPOINTS.iter().filter(|(_, p)| *p == path) {
            methods = add(methods, method, path);
        }
        // OpenAPI has no catch-all parameter; the object path is one in axum.
        router = router.route(&path.replace("{path}", "{*path}"), methods);
    }
    router
}

fn add(methods: MethodRouter<Arc<AppState>>, method: &str, path: &str) -> MethodRouter<Arc<AppState>> {
    match (method, path) {
        ("GET", "/v1/objects") => methods.get(list_objects),
        ("GET", "/v1/objects/{path}") => methods.get(get_object),
        ("HEAD", "/v1/objects/{path}") => methods.head(head_object),
        ("PUT", "/v1/objects/{path}") => methods.put(put_object),
        ("DELETE", "/v1/objects/{path}") => methods.delete(delete_object),
        ("GET", "/v1/chunks/{digest}") => methods.get(get_chunk),
        ("HEAD", "/v1/chunks/{digest}") => methods.head(head_chunk),
        ("PUT", "/v1/chunks/{digest}") => methods.put(put_chunk),
        ("GET", "/v1/snapshots/{id}") => methods.get(get_manifest),
        ("HEAD", "/v1/snapshots/{id}") => methods.head(head_manifest),
        ("PUT", "/v1/snapshots/{id}") => methods.put(put_manifest),
        ("GET", "/v1/snapshots/{id}/rootfs.tar") => methods.get(get_tar),
        ("HEAD", "/v1/snapshots/{id}/rootfs.tar") => methods.head(get_tar),
        ("GET", "/v1/keys/{key}") => methods.get(get_key),
        ("HEAD", "/v1/keys/{key}") => methods.head(head_key),
        ("PUT", "/v1/keys/{key}") => methods.put(put_key),
        ("GET", "/v1/openapi.json") => {
            methods.get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) })
        }
        _ => unreachable!("ENDPOINTS lists {method} {path} without a handler"),
    }
}

// ---- parameters ----

fn object_path(param: Result<Path<String>, PathRejection>) -> Result<ObjectPath, ApiError> {
    let Path(raw) = param.map_err(|e| ApiError::bad_request(format!("the object path is not valid: {e}")))?;
    ObjectPath::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn digest(param: Result<Path<String>, PathRejection>, what: &str) -> Result<Digest, ApiError> {
    let Path(raw) = param.map_err(|e| ApiError::bad_request(format!("the {what} is not valid: {e}")))?;
    raw.parse::<Digest>().map_err(|_| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::bad_request(format!("`{shown}` is not a {what}: expected sha256:<64 hex digits>"))
    })
}

/// The largest body or object accepted at `path`.
fn limit_for(state: &AppState, path: &ObjectPath) -> (u64, &'static str) {
    let p = path.as_str();
    if layout::parse_chunk(p).is_some() {
        (zstd_bound(MAX_CHUNK_BYTES), "a chunk")
    } else if layout::parse_snapshot(p).is_some() {
        (state.limits.manifest, "a manifest")
    } else if p.starts_with(layout::KEYS) || p.starts_with(layout::REFS) {
        (catalog::MAX_RECORD_BYTES, "a record")
    } else {
        (state.limits.object, "an object")
    }
}

/// The strong validator of the object at `path`: its digest when it is content-addressed,
/// else the store's ETag.
fn etag_for(path: &ObjectPath, store_etag: &str) -> String {
    let p = path.as_str();
    layout::parse_chunk(p)
        .or_else(|| layout::parse_snapshot(p).map(|id| id.0))
        .map_or_else(|| store_etag.to_owned(), |d| d.hex())
}

fn is_immutable(path: &ObjectPath) -> bool {
    layout::parse_chunk(path.as_str()).is_some() || layout::parse_snapshot(path.as_str()).is_some()
}

fn content_type(path: &ObjectPath) -> &'static str {
    let p = path.as_str();
    if layout::parse_chunk(p).is_some() {
        "application/zstd"
    } else if layout::parse_snapshot(p).is_some()
        || p.starts_with(layout::KEYS)
        || p.starts_with(layout::REFS)
    {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

fn quoted(etag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{etag}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == "*" || t == etag)
    })
}

fn object_headers(path: &ObjectPath, etag: &str) -> [(header::HeaderName, HeaderValue); 3] {
    let cache = if is_immutable(path) { IMMUTABLE } else { REVALIDATE };
    [
        (header::ETAG, quoted(etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
    ]
}

// ---- the object protocol ----

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list_objects(
    State(state): State<Arc<AppState>>,
    Query(ListQuery { prefix }): Query<ListQuery>,
) -> Result<Response, ApiError> {
    // Checked here too, not only by a local store: the answer is the same over any store.
    layout::check_prefix(&prefix).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let objects: Vec<serde_json::Value> = state
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|meta| {
            let modified = meta.last_modified.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            serde_json::json!({
                "path": meta.path.as_str(),
                "size": meta.size,
                "modified_ms": u64::try_from(modified.as_millis()).unwrap_or(u64::MAX),
                "etag": etag_for(&meta.path, &meta.etag),
            })
        })
        .collect();
    let body = serde_json::json!({ "objects": objects }).to_string();
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, REVALIDATE)], body)
        .into_response())
}

async fn get_object(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_object(&state, &object_path(path)?, &headers).await
}

async fn head_object(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    stat_object(&state, &object_path(path)?, &headers).await
}

async fn put_object(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write_object(&state, &object_path(path)?, &headers, body).await
}

async fn delete_object(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = object_path(path)?;
    state.store.delete(&path).await?;
    tracing::info!(path = %path, "deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GET of one object, answering a matching `If-None-Match` of an immutable object without
/// reading it.
async fn read_object(state: &AppState, path: &ObjectPath, headers: &HeaderMap) -> Result<Response, ApiError> {
    if is_immutable(path) && none_match(headers, &etag_for(path, "")) {
        return stat_object(state, path, headers).await;
    }
    let (limit, _) = limit_for(state, path);
    let got = state.store.get(path, limit).await?;
    if let Some(id) = layout::parse_snapshot(path.as_str())
        && Digest::of(&got.bytes) != id.0
    {
        // Served manifests are checked: a client trusting the id must get those bytes.
        return Err(ApiError::internal(format!("the stored manifest {id} does not hash to its id")));
    }
    let etag = etag_for(path, &got.etag);
    if none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, object_headers(path, &etag)).into_response());
    }
    Ok((object_headers(path, &etag), got.bytes).into_response())
}

/// HEAD of one object (also the 304 of a conditional GET of an immutable one).
async fn stat_object(state: &AppState, path: &ObjectPath, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(meta) = state.store.head(path).await? else {
        return Err(ApiError::not_found(format!("`{path}` is not in the store")));
    };
    let etag = etag_for(path, &meta.etag);
    let status = if none_match(headers, &etag) { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let mut response = (status, object_headers(path, &etag)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(meta.last_modified)) {
        h.insert(header::LAST_MODIFIED, date);
    }
    Ok(response)
}

/// Reads a request body of at most `limit` bytes.
///
/// A body over the limit is refused with 413, but only after reading (and discarding) up to
/// [`DRAIN_MAX`] more bytes: a client still sending when the answer comes would see a reset
/// connection instead of the reason. Beyond that, or when `Content-Length` already says so,
/// the answer comes at once and the connection is closed.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
    what: &str,
    idle: Duration,
) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit) {
        if declared.is_some_and(|n| n <= limit.saturating_add(DRAIN_MAX)) {
            drain(&mut stream).await;
        }
        return Err(ApiError::too_large(what, limit));
    }
    let capacity = declared.unwrap_or(0).min(limit).min(64 * 1024 * 1024);
    let mut collected = bytes::BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    // A body that stops arriving holds nothing: after `idle` without a byte, the answer is 408
    // and the connection closes (the unread rest cannot carry another request).
    loop {
        let next = tokio::time::timeout(idle, stream.next()).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body stopped arriving (nothing for {})", humantime::format_duration(idle)),
            )
        })?;
        let Some(piece) = next else { break };
        let piece = piece.map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
        if (collected.len() + piece.len()) as u64 > limit {
            drain(&mut stream).await;
            return Err(ApiError::too_large(what, limit));
        }
        collected.extend_from_slice(&piece);
    }
    Ok(collected.freeze())
}

/// Most bytes of an oversized body read and discarded so that its sender gets the 413.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;

async fn drain(stream: &mut axum::body::BodyDataStream) {
    let discard = async {
        let mut seen: u64 = 0;
        while let Some(Ok(piece)) = stream.next().await {
            seen += piece.len() as u64;
            if seen > DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), discard).await;
}

/// PUT of one object: bounded, checked by [`admission::check`], then written as the
/// preconditions say. Content-addressed objects are always create-only; without
/// `If-None-Match` an existing one answers 200 (the same bytes are there).
async fn write_object(
    state: &AppState,
    path: &ObjectPath,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (limit, what) = limit_for(state, path);
    let bytes = read_body(body, headers, limit, what, state.body_timeout).await?;
    admission::check(&*state.store, path, &bytes).await?;
    let if_none_match = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*");
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let mode = match (if_none_match || is_immutable(path), if_match) {
        (true, None) => PutMode::Create,
        (false, Some(etag)) => PutMode::Update { etag },
        (false, None) => PutMode::Overwrite,
        (true, Some(_)) => {
            return Err(ApiError::bad_request("If-Match cannot be combined with a create-only write"));
        }
    };
    let size = bytes.len();
    let mut outcome = state.store.put(path, bytes.clone(), mode.clone()).await?;
    // Content-addressed objects are create-only, but a damaged one is no published data: the
    // body, checked above to be exactly what the path names, replaces it.
    if matches!(outcome, PutOutcome::AlreadyExists)
        && is_immutable(path)
        && !stored_sound(state, path, limit).await
    {
        tracing::warn!(path = %path, "replacing a damaged object with verified bytes");
        outcome = state.store.put(path, bytes, PutMode::Overwrite).await?;
    }
    match outcome {
        PutOutcome::Written { etag } => {
            tracing::info!(path = %path, size, "stored");
            let etag = etag_for(path, &etag);
            Ok((StatusCode::CREATED, [(header::ETAG, quoted(&etag))]).into_response())
        }
        PutOutcome::AlreadyExists if if_none_match => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "exists",
            format!("`{path}` is already in the store"),
        )),
        PutOutcome::AlreadyExists => {
            let etag = etag_for(path, "");
            Ok((StatusCode::OK, [(header::ETAG, quoted(&etag))]).into_response())
        }
    }
}

/// Whether the stored content-addressed object at `path` is what its name says. Anything but
/// a clean read (gone, not a file, over its bound, a failing store) counts as not sound: the
/// verified body then replaces it, or the store's failure is reported by that write.
async fn stored_sound(state: &AppState, path: &ObjectPath, limit: u64) -> bool {
    let Ok(got) = state.store.get_uncached(path, limit).await else { return false };
    if let Some(digest) = layout::parse_chunk(path.as_str()) {
        envbuild_cache::chunk::verify_stored(&got.bytes, &digest).is_ok()
    } else if let Some(id) = layout::parse_snapshot(path.as_str()) {
        Digest::of(&got.bytes) == id.0
    } else {
        true
    }
}

// ---- chunks and manifests ----

async fn get_chunk(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_object(&state, &layout::chunk(&digest(param, "chunk digest")?), &headers).await
}

async fn head_chunk(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    stat_object(&state, &layout::chunk(&digest(param, "chunk digest")?), &headers).await
}

async fn put_chunk(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write_object(&state, &layout::chunk(&digest(param, "chunk digest")?), &headers, body).await
}

fn snapshot_id(param: Result<Path<String>, PathRejection>) -> Result<SnapshotId, ApiError> {
    digest(param, "snapshot id").map(SnapshotId)
}

async fn get_manifest(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_object(&state, &layout::snapshot(&snapshot_id(param)?), &headers).await
}

async fn head_manifest(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    stat_object(&state, &layout::snapshot(&snapshot_id(param)?), &headers).await
}

async fn put_manifest(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write_object(&state, &layout::snapshot(&snapshot_id(param)?), &headers, body).await
}

/// The snapshot's exact tar stream, chunk by chunk as they are fetched and verified: never
/// more than a few chunks in memory. A chunk that fails verification ends the response
/// early, which the client sees as a body shorter than its `Content-Length`.
async fn get_tar(
    State(state): State<Arc<AppState>>,
    method: Method,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = snapshot_id(param)?;
    let manifest = state.manifest(&id).await?;
    let etag = format!("{}.tar", id.0.hex());
    let head = [
        (header::ETAG, quoted(&etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
        (header::CONTENT_LENGTH, HeaderValue::from(manifest.size)),
    ];
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [head[0].clone(), head[1].clone()]).into_response());
    }
    if method == Method::HEAD {
        return Ok((head, Body::empty()).into_response());
    }
    let stream = restore::chunk_stream(state.store.clone(), manifest.chunks.clone(), TAR_CONCURRENCY).map(
        move |item| {
            item.map_err(|e| {
                tracing::error!(snapshot = %id, "the tar stream stopped: {e}");
                std::io::Error::other("the snapshot could not be read")
            })
        },
    );
    Ok((head, Body::from_stream(stream)).into_response())
}

// ---- keys ----

/// The key record, only if the snapshot it names is really stored.
async fn key_record(state: &AppState, key: &Digest) -> Result<(KeyRecord, String), ApiError> {
    let path = layout::key(key);
    let got = match state.store.get(&path, catalog::MAX_RECORD_BYTES).await {
        Ok(got) => got,
        Err(e) if e.is_not_found() => {
            return Err(ApiError::not_found(format!("key {key} is not in the store")));
        }
        Err(e) => return Err(e.into()),
    };
    let record: KeyRecord = serde_json::from_slice(&got.bytes)
        .map_err(|e| ApiError::internal(format!("the key record {key} is damaged: {e}")))?;
    if state.store.head(&layout::snapshot(&record.snapshot)).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "key {key} points at snapshot {}, which is no longer stored",
            record.snapshot
        )));
    }
    Ok((record, got.etag))
}

async fn get_key(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (record, etag) = key_record(&state, &digest(param, "cache key")?).await?;
    let path = layout::key(&record.key);
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, object_headers(&path, &etag)).into_response());
    }
    let body = serde_json::to_vec_pretty(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((object_headers(&path, &etag), body).into_response())
}

async fn head_key(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (record, etag) = key_record(&state, &digest(param, "cache key")?).await?;
    Ok(object_headers(&layout::key(&record.key), &etag).into_response())
}

async fn put_key(
    State(state): State<Arc<AppState>>,
    param: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write_object(&state, &layout::key(&digest(param, "cache key")?), &headers, body).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document and the router list the same operations.
    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "head", "put", "delete", "post", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> =
            ENDPOINTS.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty(), "routes missing from docs/openapi.json: {undocumented:?}");
        assert!(unrouted.is_empty(), "docs/openapi.json documents routes that do not exist: {unrouted:?}");
        // Building the router panics on an entry without a handler.
        let _ = routes();
    }

    #[test]
    fn validators() {
        let chunk = layout::chunk(&Digest::of(b"x"));
        assert_eq!(etag_for(&chunk, "store-etag"), Digest::of(b"x").hex());
        let lease = ObjectPath::new("v1/leases/a").unwrap();
        assert_eq!(etag_for(&lease, "store-etag"), "store-etag");
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"a\", \"b\""));
        assert!(none_match(&headers, "b") && !none_match(&headers, "c"));
    }
}
