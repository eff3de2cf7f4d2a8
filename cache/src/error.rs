//! The crate's error type: one enum, semantic variants, messages that name the object.

use crate::chunk::CorruptChunk;
use crate::digest::SnapshotId;
use crate::extract::Refused;
use crate::manifest::ManifestError;
use crate::store::StoreError;
use crate::tar::TarError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptChunk),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the input is not a valid tar stream: {0}")]
    Tar(#[from] TarError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("snapshot {id} does not exist in {store}")]
    NoSuchSnapshot { id: SnapshotId, store: String },
    #[error("no snapshot in {store} matches `{query}`")]
    UnknownSnapshot { query: String, store: String },
    #[error("`{query}` matches {count} snapshots in {store}; give more digits")]
    AmbiguousSnapshot { query: String, count: usize, store: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Busy(String),
    #[error(
        "the snapshot would contain secret values, so nothing was published: {}",
        findings.iter().map(|(secret, path)| format!("`{secret}` in `{path}`")).collect::<Vec<_>>().join(", ")
    )]
    Leak { findings: Vec<(String, String)> },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
