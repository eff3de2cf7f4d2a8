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
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Busy(String),
    #[error(
        "the snapshot would contain secret values, so nothing was published: {}\nhint: use a secret during install without keeping it: reference the variable from the config file instead of its value (in `.npmrc`: `//registry.npmjs.org/:_authToken=${{NPM_TOKEN}}`; pip: `--index-url https://user:${{PIP_TOKEN}}@host/simple` on the command line), or remove the file at the end of install",
        findings.iter().map(|(secret, path)| format!("`{secret}` in `/{}`", path.trim_start_matches('/'))).collect::<Vec<_>>().join(", ")
    )]
    Leak { findings: Vec<(String, String)> },
    /// The changes cannot be applied to the parent snapshot (see `splice`); the whole file
    /// system has to be stored instead.
    #[error("the changes cannot be applied to the parent snapshot: {0}")]
    NotSpliceable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether this says an object is bad (a damaged manifest or chunk, something other than
    /// a file in its place, an object over its bound): what a store-wide command reports about
    /// that object before going on, where a failing store stops it.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Manifest(_) | Error::Corrupt(_) => true,
            Error::Store(e) => e.is_damage(),
            _ => false,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `err` and its sources as one sentence, `: `-joined, each said once. For SDK errors whose
/// own rendering appends a `Debug` dump of the raw response: users need the causes, not the
/// struct.
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        // A wrapper often repeats its source's message at the end of its own; keep the new part.
        if !text.is_empty() && !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner cause")]
    struct Inner;

    #[test]
    fn chain_text_joins_sources_without_debug() {
        assert_eq!(chain_text(&Outer(Inner)), "outer: inner cause");
    }
}
