//! Opening a store from its location, with the decorators remote stores need.
//!
//! - a path or `file://PATH`: the local directory store;
//! - `s3://BUCKET/PREFIX` (feature `s3`): S3, wrapped in [`Retrying`] and [`Cached`], and
//!   checked once for conditional-write support (see [`super::check_conditional_writes`]);
//! - `http://` and `https://` (feature `http`): the client of `envbuild serve`, wrapped in
//!   [`Retrying`] and [`Cached`]. The server checks conditional writes itself, so there is no
//!   probe.

use std::path::PathBuf;
use std::sync::Arc;

use super::cached::Cached;
use super::local::LocalStore;
use super::retry::{RetryPolicy, Retrying};
use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Where remote stores keep their local cache of chunks and manifests; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
    pub retry: RetryPolicy,
    /// Use an S3 server that ignores `If-None-Match` anyway.
    pub allow_unconditional_writes: bool,
    /// Create a local store that does not exist yet (writers); readers want an error instead.
    pub create: bool,
    #[cfg(feature = "s3")]
    pub s3: super::s3::S3Options,
    #[cfg(feature = "http")]
    pub http: super::http::HttpOptions,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            cache_max_bytes: 10 * 1024 * 1024 * 1024,
            retry: RetryPolicy::default(),
            allow_unconditional_writes: false,
            create: true,
            #[cfg(feature = "s3")]
            s3: super::s3::S3Options::default(),
            #[cfg(feature = "http")]
            http: super::http::HttpOptions::default(),
        }
    }
}

/// Whether `location` names a remote store (S3 or HTTP) rather than a directory.
pub fn is_remote(location: &str) -> bool {
    ["s3://", "http://", "https://"].iter().any(|scheme| location.starts_with(scheme))
}

pub async fn open(location: &str, options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    let local = |path: &str| {
        if options.create { LocalStore::open(path) } else { LocalStore::open_existing(path) }
    };
    if let Some(path) = location.strip_prefix("file://") {
        return Ok(Arc::new(local(path)?));
    }
    if location.starts_with("s3://") {
        return open_s3(location, options).await;
    }
    if location.starts_with("http://") || location.starts_with("https://") {
        return open_http(location, options);
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(StoreError::Unusable {
            store: location.to_owned(),
            message: format!("`{scheme}://` is not a store scheme this envbuild knows"),
            hint: Some(
                "use a directory path, file://PATH, s3://BUCKET/PREFIX or http(s)://HOST:PORT".to_owned(),
            ),
        });
    }
    Ok(Arc::new(local(location)?))
}

/// Adds the retry and cache layers a remote store needs.
pub fn decorate<S: Store + 'static>(remote: S, options: &OpenOptions) -> Arc<dyn Store> {
    let retrying = Retrying::new(remote, options.retry);
    match &options.cache_dir {
        Some(dir) => Arc::new(Cached::new(retrying, dir, options.cache_max_bytes)),
        None => Arc::new(retrying),
    }
}

#[cfg(feature = "s3")]
async fn open_s3(location: &str, options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    let s3 = super::s3::S3Store::connect(location, &options.s3).await?;
    let store = decorate(s3, options);
    if !options.allow_unconditional_writes {
        super::check_conditional_writes(&*store).await?;
    }
    Ok(store)
}

#[cfg(not(feature = "s3"))]
#[allow(clippy::unused_async)] // the same signature as the real one
async fn open_s3(location: &str, _options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Unusable {
        store: location.to_owned(),
        message: "this envbuild was built without S3 support".to_owned(),
        hint: Some("rebuild with `--features s3` (the default)".to_owned()),
    })
}

#[cfg(feature = "http")]
fn open_http(location: &str, options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(decorate(super::http::HttpStore::new(location, &options.http)?, options))
}

#[cfg(not(feature = "http"))]
fn open_http(location: &str, _options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Unusable {
        store: location.to_owned(),
        message: "this envbuild was built without the HTTP store client".to_owned(),
        hint: Some("rebuild with `--features http`".to_owned()),
    })
}
