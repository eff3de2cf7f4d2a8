//! The read side of the OCI distribution API at `/v2/`, so Docker, containerd, podman,
//! skopeo (and what runs on them: Kubernetes, Nomad, ECS) pull snapshots as images.
//!
//! Every snapshot is the repository `snapshots`, one image per snapshot (see
//! [`crate::image`]):
//!
//! - `/v2/snapshots/manifests/<tag>` where the tag is a snapshot id's 64 hex digits, a cache
//!   key's (the snapshot its record names), or a ref name without `/`. A tag gives the zstd
//!   variant, except to a Docker engine older than 23, which cannot read zstd layers and gets
//!   the uncompressed one; the suffixes `-zstd` and `-tar` choose explicitly
//!   (`<id>-tar`).
//! - `/v2/snapshots/manifests/sha256:<hex>`: a manifest by its own digest, either variant.
//! - `/v2/snapshots/blobs/sha256:<hex>`: the configuration or a layer, with `Range`.
//! - `/v2/snapshots/tags/list`: snapshot ids and ref names, paginated with `n` and `last`.
//!
//! Read tokens authorize, as a Bearer token or as the Basic password with any user name;
//! without one `/v2/` answers 401 with a Basic challenge, which is what `docker login`,
//! containerd (`--user`) and skopeo (`--creds`) answer. The registry is read-only: pushes get
//! `UNSUPPORTED`. Errors have the spec's body, `{"errors": [{"code", "message"}]}`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use envbuild_cache::{Digest, SnapshotId, catalog, layout};
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::AppState;
use super::error::ApiError;
use crate::image::{self, Image, Part, Variant};

/// The only repository name.
pub const REPOSITORY: &str = "snapshots";
/// Chunks fetched at once for one layer.
const LAYER_JOBS: usize = 8;
/// Images kept in memory (a few kilobytes each, plus their manifest's chunk list).
const MAX_IMAGES: usize = 1024;
/// The header every answer under `/v2` carries, errors included.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/", get(version))
        .route("/v2", get(version))
        .route("/v2/{name}/manifests/{reference}", get(manifest).fallback(elsewhere))
        .route("/v2/{name}/blobs/{digest}", get(blob).fallback(elsewhere))
        .route("/v2/{name}/blobs/uploads/", any(elsewhere))
        .route("/v2/{name}/blobs/uploads/{*rest}", any(elsewhere))
        .route("/v2/{name}/tags/list", get(tags).fallback(elsewhere))
        .layer(axum::middleware::map_response(|mut response: Response| async move {
            response.headers_mut().insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
            response
        }))
}

/// An error with the distribution spec's body: an [`ApiError`] whose code is one of the
/// spec's.
#[derive(Debug)]
pub struct RegistryError(ApiError);

impl RegistryError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self(ApiError::new(status, code, message))
    }

    fn manifest_unknown(reference: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", format!("no snapshot's image is `{reference}`"))
    }

    fn blob_unknown(digest: &Digest) -> Self {
        Self::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", format!("no snapshot's image has the blob {digest}"))
    }
}

impl From<ApiError> for RegistryError {
    fn from(mut e: ApiError) -> Self {
        e.code = match e.status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "DENIED",
            StatusCode::NOT_FOUND => "MANIFEST_UNKNOWN",
            StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
            _ => "UNKNOWN",
        };
        Self(e)
    }
}

impl From<envbuild_cache::Error> for RegistryError {
    fn from(e: envbuild_cache::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::error::Error> for RegistryError {
    fn from(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Cache(e) => e.into(),
            crate::error::Error::Store(e) => ApiError::from(e).into(),
            other => ApiError::internal(other.to_string()).into(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let Self(error) = self;
        error.log();
        let body = serde_json::json!({ "errors": [{ "code": error.code, "message": error.message }] });
        let mut response = (error.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
        response
    }
}

type Answer = Result<Response, RegistryError>;

/// The images this process has opened, and which snapshot each digest belongs to. One cell
/// per snapshot, so concurrent first pulls of one snapshot compute its record once.
#[derive(Debug, Default)]
pub struct ImageCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    by_id: HashMap<SnapshotId, Arc<OnceCell<Arc<Image>>>>,
    by_digest: HashMap<Digest, SnapshotId>,
}

impl ImageCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cell(&self, id: SnapshotId) -> Arc<OnceCell<Arc<Image>>> {
        let mut inner = self.lock();
        if inner.by_id.len() >= MAX_IMAGES && !inner.by_id.contains_key(&id) {
            inner.by_id.clear();
            inner.by_digest.clear();
        }
        inner.by_id.entry(id).or_default().clone()
    }

    fn note(&self, image: &Image) {
        let mut inner = self.lock();
        for digest in image.digests() {
            inner.by_digest.insert(digest, image.id);
        }
    }

    fn snapshot_of(&self, digest: &Digest) -> Option<SnapshotId> {
        self.lock().by_digest.get(digest).copied()
    }
}

impl AppState {
    /// The image of snapshot `id`: from memory, or from the store's record, or computed.
    async fn image(&self, id: SnapshotId) -> Result<Arc<Image>, RegistryError> {
        let cell = self.images.cell(id);
        let image = cell
            .get_or_try_init(|| async {
                let manifest = self.manifest(&id).await.map_err(RegistryError::from)?;
                let image = image::open(&self.store, id, manifest, LAYER_JOBS).await?;
                Ok::<_, RegistryError>(Arc::new(image))
            })
            .await?
            .clone();
        self.images.note(&image);
        Ok(image)
    }

    /// The image with a blob or manifest of `digest`, and what the digest names in it.
    async fn image_with(&self, digest: &Digest) -> Result<Option<(Arc<Image>, Part)>, RegistryError> {
        let id = match self.images.snapshot_of(digest) {
            Some(id) => Some(id),
            None => image::snapshot_of(&*self.store, digest).await?,
        };
        let Some(id) = id else { return Ok(None) };
        let image = match self.image(id).await {
            Ok(image) => image,
            // A pointer to a snapshot that is gone (removed since) names nothing.
            Err(e) if e.0.status == StatusCode::NOT_FOUND => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(image.find(digest).map(|part| (image.clone(), part)))
    }
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    if name == REPOSITORY {
        Ok(())
    } else {
        Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("there is no repository `{name}`; snapshots are in `{REPOSITORY}`"),
        ))
    }
}

/// A digest as references and blob paths give it: `sha256:` and 64 hex digits.
fn parse_digest(text: &str) -> Result<Digest, RegistryError> {
    text.strip_prefix("sha256:").and_then(|hex| Digest::from_hex(hex).ok()).ok_or_else(|| {
        RegistryError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("`{text}` is not a digest this registry has (sha256:<64 hex digits>)"),
        )
    })
}

/// Whether the client reads zstd layers: all do but the Docker engine before 23, which says
/// who it is in its User-Agent (`docker/20.10.24 go/...`).
fn takes_zstd(headers: &HeaderMap) -> bool {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let major = agent
        .strip_prefix("docker/")
        .and_then(|rest| rest.split(['.', ' ']).next())
        .and_then(|major| major.parse::<u32>().ok());
    major.is_none_or(|major| major >= 23)
}

/// OCI's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether snapshot `id` is stored now.
async fn stored(state: &AppState, id: &SnapshotId) -> Result<bool, RegistryError> {
    Ok(state.store.head(&layout::snapshot(id)).await.map_err(ApiError::from)?.is_some())
}

/// The stored snapshot a tag names: a snapshot id's hex, a cache key's, or a ref.
async fn resolve_tag(state: &AppState, tag: &str) -> Result<Option<SnapshotId>, RegistryError> {
    let named = if tag.len() == 64
        && let Ok(digest) = Digest::from_hex(tag)
    {
        let id = SnapshotId(digest);
        if stored(state, &id).await? {
            return Ok(Some(id));
        }
        catalog::read_key(&*state.store, &digest).await?.map(|record| record.snapshot)
    } else if layout::reference(tag).is_ok() {
        catalog::read_ref(&*state.store, tag).await?.map(|(record, _)| record.snapshot)
    } else {
        None
    };
    match named {
        Some(id) if stored(state, &id).await? => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// The snapshot and variant a tag asks for: the tag as it is, else without a `-zstd` or
/// `-tar` suffix, which then chooses the variant.
async fn resolve_reference(
    state: &AppState,
    tag: &str,
    headers: &HeaderMap,
) -> Result<Option<(SnapshotId, Variant)>, RegistryError> {
    let default = if takes_zstd(headers) { Variant::Zstd } else { Variant::Tar };
    if let Some(id) = resolve_tag(state, tag).await? {
        return Ok(Some((id, default)));
    }
    for variant in [Variant::Zstd, Variant::Tar] {
        if let Some(base) = tag.strip_suffix(&format!("-{}", variant.as_str()))
            && let Some(id) = resolve_tag(state, base).await?
        {
            return Ok(Some((id, variant)));
        }
    }
    Ok(None)
}

/// `GET /v2/`: the API is here, and the token is good.
async fn version() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// Everything else under `/v2/`: pushes and unknown endpoints.
pub async fn elsewhere(method: Method) -> RegistryError {
    if method == Method::GET || method == Method::HEAD {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "there is no such endpoint in this registry",
        )
    } else {
        RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only: snapshots arrive by `envbuild push`, not by pushing images",
        )
    }
}

fn digest_header(digest: &Digest) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&digest.to_string()).unwrap_or(HeaderValue::from_static(""));
    (header::HeaderName::from_static("docker-content-digest"), value)
}

fn etag(digest: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

async fn manifest(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path((name, reference)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    check_name(&name)?;
    let (image, variant) = if reference.starts_with("sha256:") {
        let digest = parse_digest(&reference)?;
        match state.image_with(&digest).await? {
            // Images stay in memory; a snapshot removed since (`rm`, `prune`) is no longer
            // offered. (A tag resolves only to stored snapshots; blobs are not re-checked, so
            // a pull that has its manifest finishes.)
            Some((image, Part::Manifest(variant))) if stored(&state, &image.id).await? => (image, variant),
            _ => return Err(RegistryError::manifest_unknown(&reference)),
        }
    } else {
        if !valid_tag(&reference) {
            return Err(RegistryError::new(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("`{reference}` is not a tag: letters, digits and `_.-`, at most 128"),
            ));
        }
        match resolve_reference(&state, &reference, &headers).await? {
            Some((id, variant)) => (state.image(id).await?, variant),
            None => return Err(RegistryError::manifest_unknown(&reference)),
        }
    };
    let docs = image.documents(variant);
    let blob = docs.manifest_blob();
    let head = [
        (header::CONTENT_TYPE, HeaderValue::from_static(envbuild_builder::oci::MANIFEST_MEDIA_TYPE)),
        (header::CONTENT_LENGTH, HeaderValue::from(blob.size)),
        digest_header(&blob.digest),
        (header::ETAG, etag(&blob.digest)),
    ];
    if method == Method::HEAD {
        return Ok((head, Body::empty()).into_response());
    }
    Ok((head, docs.manifest.clone()).into_response())
}

/// The single byte range a `Range` header asks for within `size` bytes: `None` for the whole
/// blob (no header, or one this server does not narrow: several ranges, other units), an
/// error when it cannot be satisfied.
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else { return Err(()) };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 {
            return Err(());
        }
        size.saturating_sub(suffix)..size
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size
        } else {
            last.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(size)
        };
        if start >= size || end <= start {
            return Err(());
        }
        start..end
    };
    Ok(Some(range))
}

async fn blob(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path((name, digest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    check_name(&name)?;
    let digest = parse_digest(&digest)?;
    let Some((image, part)) = state.image_with(&digest).await? else {
        return Err(RegistryError::blob_unknown(&digest));
    };
    let size = match part {
        Part::Manifest(variant) => image.documents(variant).manifest_blob().size,
        Part::Config => image.documents(Variant::Tar).config_blob().size,
        Part::Layer(variant) => image.layer(variant).size,
    };
    let Ok(range) = requested_range(&headers, size) else {
        let mut response = RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            format!("the range asked for is not within the blob's {size} bytes"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        return Ok(response);
    };
    let (status, span) = match &range {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range.clone()),
        None => (StatusCode::OK, 0..size),
    };
    let mut head = HeaderMap::new();
    head.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(span.end - span.start));
    head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    head.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    head.insert(header::ETAG, etag(&digest));
    let (name, value) = digest_header(&digest);
    head.insert(name, value);
    if range.is_some()
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", span.start, span.end - 1))
    {
        head.insert(header::CONTENT_RANGE, value);
    }
    if method == Method::HEAD {
        return Ok((status, head, Body::empty()).into_response());
    }
    let body = match part {
        Part::Manifest(variant) => Body::from(slice(&image.documents(variant).manifest, &span)),
        Part::Config => Body::from(slice(&image.documents(Variant::Tar).config, &span)),
        Part::Layer(variant) => {
            let id = image.id;
            let stream = image::layer_stream(state.store.clone(), image.clone(), variant, span, LAYER_JOBS)
                .map(move |item| {
                    item.map_err(|e| {
                        // Ending the body early is all HTTP allows once it has begun: the
                        // client sees fewer bytes than Content-Length and fails the pull.
                        tracing::error!(snapshot = %id, "the {} layer stopped: {e}", variant.as_str());
                        std::io::Error::other("the snapshot could not be read")
                    })
                });
            Body::from_stream(stream)
        }
    };
    Ok((status, head, body).into_response())
}

fn slice(bytes: &[u8], span: &Range<u64>) -> Vec<u8> {
    let (start, end) = (usize::try_from(span.start).unwrap_or(0), usize::try_from(span.end).unwrap_or(0));
    bytes.get(start..end).unwrap_or_default().to_vec()
}

#[derive(Debug, serde::Deserialize)]
struct TagsQuery {
    n: Option<usize>,
    last: Option<String>,
}

/// The tags: every snapshot id's hex and every ref without a `/`, sorted, paginated.
async fn tags(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<TagsQuery>,
) -> Answer {
    check_name(&name)?;
    let mut tags: Vec<String> =
        catalog::list_snapshots(&*state.store).await?.into_iter().map(|(id, _)| id.0.hex()).collect();
    for meta in state.store.list(layout::REFS).await.map_err(ApiError::from)? {
        if let Some(name) = meta.path.as_str().strip_prefix(layout::REFS)
            && valid_tag(name)
        {
            tags.push(name.to_owned());
        }
    }
    tags.sort();
    tags.dedup();
    if let Some(last) = &query.last {
        tags.retain(|tag| tag > last);
    }
    let mut response = HeaderMap::new();
    if let Some(n) = query.n
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last()
            && let Ok(link) = HeaderValue::from_str(&format!(
                "</v2/{REPOSITORY}/tags/list?n={n}&last={last}>; rel=\"next\""
            ))
        {
            response.insert(header::LINK, link);
        }
    }
    let body = serde_json::json!({ "name": REPOSITORY, "tags": tags });
    response.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((response, body.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
            requested_range(&headers, 100)
        };
        assert_eq!(requested_range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(with("bytes=0-9"), Ok(Some(0..10)));
        assert_eq!(with("bytes=90-"), Ok(Some(90..100)));
        assert_eq!(with("bytes=95-200"), Ok(Some(95..100)));
        assert_eq!(with("bytes=-10"), Ok(Some(90..100)));
        assert_eq!(with("bytes=-1000"), Ok(Some(0..100)));
        assert_eq!(with("bytes=0-1,5-6"), Ok(None));
        assert_eq!(with("items=0-1"), Ok(None));
        assert_eq!(with("bytes=100-"), Err(()));
        assert_eq!(with("bytes=5-4"), Err(()));
        assert_eq!(with("bytes=-0"), Err(()));
        assert_eq!(with("bytes=x-1"), Err(()));
    }

    #[test]
    fn docker_before_23_gets_the_uncompressed_layer() {
        let agent = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::USER_AGENT, HeaderValue::from_str(value).unwrap());
            takes_zstd(&headers)
        };
        assert!(!agent(
            "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1 os/linux arch/amd64"
        ));
        assert!(agent("docker/27.3.1 go/go1.22 os/linux"));
        assert!(agent("containerd/1.6.20"));
        assert!(agent("skopeo/1.9.3"));
        assert!(takes_zstd(&HeaderMap::new()));
    }

    #[test]
    fn tags() {
        assert!(valid_tag("main"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("team/main"));
        assert!(!valid_tag(""));
    }
}
