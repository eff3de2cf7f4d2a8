//! The [`Store`] trait: a minimal, object-store-shaped interface that every backend implements
//! (local directory, S3, the HTTP client of `envbuild serve`), and its error type.
//!
//! # Semantics every backend guarantees
//! - **Atomic objects.** A reader sees either nothing or a complete object, never a partial one.
//! - **Create-only writes.** [`PutMode::Create`] writes only if nothing is at the path; if
//!   something is, the result is [`PutOutcome::AlreadyExists`], which for content-addressed
//!   objects (chunks, manifests) is success. Racing writers of one path cannot corrupt it.
//! - **Compare-and-swap.** [`PutMode::Update`] replaces an object only if its current ETag is
//!   the one given, and fails with [`StoreError::Conflict`] otherwise; refs use this.
//! - **Absence is explicit.** `get` of a missing object is [`StoreError::NotFound`]; `head` of a
//!   missing object is `Ok(None)`; `delete` of a missing object is `Ok(())`.
//! - **Errors are never misses.** A backend never turns an I/O or network error into "not
//!   found": a silent miss would trigger an expensive rebuild or hide corruption.
//! - **Bounded reads.** `get` refuses objects larger than the caller's limit before reading
//!   them, so a hostile store cannot make a reader allocate without bound.
//!
//! Integrity (re-hashing what was read) is not the backend's job; the callers that know what an
//! object must hash to check it (`chunk`, `manifest`).

pub mod cached;
#[cfg(feature = "http")]
pub mod http;
pub mod local;
pub mod memory;
pub mod open;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod counting;
#[cfg(feature = "testing")]
pub mod faulty;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::layout::{InvalidPath, ObjectPath};

/// How a write treats an object already at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write only if absent (`If-None-Match: *`).
    Create,
    /// Write unconditionally.
    Overwrite,
    /// Replace only if the current ETag is this one (`If-Match`).
    Update { etag: String },
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written; its new ETag.
    Written { etag: String },
    /// `PutMode::Create` found an object already there and left it alone.
    AlreadyExists,
}

/// What a listing or `head` knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub path: ObjectPath,
    pub size: u64,
    pub last_modified: SystemTime,
    /// A strong validator of the content, usable with [`PutMode::Update`].
    pub etag: String,
}

/// An object's bytes with its metadata.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub bytes: Bytes,
    pub etag: String,
}

/// A store operation failed. Messages name the store and the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("`{path}` does not exist in {store}")]
    NotFound { store: String, path: String },
    #[error("`{path}` in {store} changed since it was read (compare-and-swap lost the race)")]
    Conflict { store: String, path: String },
    #[error("`{path}` in {store} is {size} bytes, more than the {limit} bytes allowed for it")]
    TooLarge { store: String, path: String, size: u64, limit: u64 },
    /// Something other than a regular file sits where an object should be (a directory store).
    #[error("`{path}` in {store} is {what}, not a regular file: the store is damaged there")]
    NotRegular { store: String, path: String, what: &'static str },
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    #[error("{store}: cannot {operation} `{path}`: {source}")]
    Io {
        store: String,
        operation: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The backend failed; `message` says how, and the client's own error, when there is
    /// one, is the source.
    #[error("{store}: cannot {operation} `{path}`: {message}")]
    Backend {
        store: String,
        operation: &'static str,
        path: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
        /// Whether trying again may succeed (a 5xx, a timeout, a throttle).
        retryable: bool,
    },
    #[error("{store} is not usable: {message}{}", hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Unusable { store: String, message: String, hint: Option<String> },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the object itself is bad (too large, not a file): damage to report about that
    /// object, not a failure of the store that should stop a store-wide command.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::TooLarge { .. } | StoreError::NotRegular { .. })
    }

    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend { retryable, .. } => *retryable,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            // A lost compare-and-swap is an answer, not a failure: the caller must re-read.
            _ => false,
        }
    }
}

/// An object store. See the module docs for the guarantees every implementation gives.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the store is, for messages: `local store /path`, `s3://bucket/prefix`.
    fn location(&self) -> String;

    /// Writes `data` at `path` as one atomic object, as `mode` says.
    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError>;

    /// Reads the whole object at `path`. Objects over `limit` bytes are refused with
    /// [`StoreError::TooLarge`] before their contents are read.
    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError>;

    /// Reads the object from the store itself, past any local copy a decorator keeps: for
    /// checks that must see what the store holds (`verify --read-data`). The default is
    /// [`get`](Store::get), right for every store without copies.
    async fn get_uncached(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        self.get(path, limit).await
    }

    /// The object's metadata, or `None` if nothing is at `path`.
    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every object whose path starts with `prefix`, in no particular order. A listing taken
    /// while others write may or may not include their objects.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Removes the object at `path`; succeeds if it is already gone.
    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError>;

    /// Removes the backend's own leftovers of writes abandoned before `cutoff` (temporary
    /// files, unfinished multipart uploads), returning how many. Called by `gc`.
    async fn sweep_abandoned(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let _ = cutoff;
        Ok(0)
    }

    /// Forgets any local copy of the object at `path`: a reader found it damaged, and the next
    /// read must go to the source. Stores without copies ignore it.
    async fn invalidate(&self, path: &ObjectPath) {
        let _ = path;
    }
}

#[async_trait]
impl<T: Store + ?Sized> Store for Arc<T> {
    fn location(&self) -> String {
        (**self).location()
    }
    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        (**self).put(path, data, mode).await
    }
    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        (**self).get(path, limit).await
    }
    async fn get_uncached(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        (**self).get_uncached(path, limit).await
    }
    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        (**self).head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        (**self).list(prefix).await
    }
    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        (**self).delete(path).await
    }
    async fn sweep_abandoned(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        (**self).sweep_abandoned(cutoff).await
    }
    async fn invalidate(&self, path: &ObjectPath) {
        (**self).invalidate(path).await;
    }
}

/// Checks that `store` honours create-only writes: a second create of one path must find the
/// first. A server that ignores `If-None-Match: *` would let racing writers overwrite each
/// other silently, so such a store is refused unless the caller opts out.
pub async fn check_conditional_writes(store: &dyn Store) -> Result<(), StoreError> {
    let path = ObjectPath::new(format!("v1/probe/conditional-{:016x}", rand::random::<u64>()))?;
    store.put(&path, Bytes::from_static(b"first"), PutMode::Create).await?;
    let second = store.put(&path, Bytes::from_static(b"second"), PutMode::Create).await;
    let kept = store.get(&path, 64).await.map(|got| got.bytes);
    store.delete(&path).await?;
    match (second?, kept?) {
        (PutOutcome::AlreadyExists, bytes) if bytes.as_ref() == b"first" => Ok(()),
        _ => Err(StoreError::Unusable {
            store: store.location(),
            message: "the server ignores `If-None-Match: *`, so create-only writes would silently overwrite each other"
                .to_owned(),
            hint: Some(
                "use a server with conditional writes (AWS S3, MinIO, moto), or accept the risk with --allow-unconditional-writes"
                    .to_owned(),
            ),
        }),
    }
}
