//! Snapshots as a store holds them: importing a root file system tar, listing what is stored,
//! restoring one into a directory. Thin on purpose: the work is `envbuild_cache`'s; this adds
//! the session's progress and concurrency.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use envbuild_cache::extract::ExtractOptions;
use envbuild_cache::extract::ExtractReport;
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, Progress};
use envbuild_cache::manifest::Manifest;
use envbuild_cache::restore;
use envbuild_cache::{SnapshotId, catalog};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Result, ResultExt};
use crate::session::Session;

/// The snapshot `query` names (an id, a unique prefix or a ref) and its manifest, verified.
pub async fn find(store: &dyn envbuild_cache::Store, query: &str) -> Result<(SnapshotId, Manifest)> {
    let id = catalog::resolve(store, query).await?;
    let manifest = restore::read_manifest(store, &id).await?;
    Ok((id, manifest))
}

/// Stores the root file system tar `input` (of `size` bytes when known) as a snapshot. With
/// `scan`, the stream is searched for the values of every secret of the store (raw, base64,
/// hex), as a build's is, and refused when it holds one.
pub async fn import(
    session: &Session,
    input: Box<dyn Read + Send>,
    size: Option<u64>,
    scan: bool,
) -> Result<IngestReport> {
    let counters = Arc::new(Progress::default());
    if let Some(size) = size {
        counters.total.store(size, std::sync::atomic::Ordering::Relaxed);
    }
    let leak_scanner = if scan {
        let found = envbuild_secrets::records::list(&*session.store, &[]).await?;
        let loaded = envbuild_secrets::records::open_all(&session.keyring, found).await.context(
            "cannot search the stream for the store's secrets\nhint: point ENVBUILD_MASTER_KEY (or the KMS key) at the key that seals them, or pass --no-secret-scan",
        )?;
        envbuild_secrets::scan::SecretScanner::new(&envbuild_secrets::records::patterns(&loaded)?)?
            .map(|scanner| Arc::new(scanner) as Arc<dyn envbuild_cache::ingest::LeakScanner>)
    } else {
        None
    };
    let options = IngestOptions {
        concurrency: session.jobs,
        leak_scanner,
        verified: crate::store::verified(&*session.store),
        ..IngestOptions::default()
    };
    let _bar = session.reporter.progress("importing", &counters);
    Ok(ingest::ingest(session.store.clone(), input, options, counters).await?)
}

/// One stored snapshot, as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: SnapshotId,
    pub size: u64,
    /// Stored bytes of its distinct chunks.
    pub stored: u64,
    pub entries: usize,
    pub chunks: usize,
    /// When its manifest was stored.
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    /// Why its manifest cannot be read, when it cannot (the other fields are then zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

mod rfc3339 {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }
}

/// Every snapshot in the store, newest first.
pub async fn list(session: &Session) -> Result<Vec<Listed>> {
    let store = &session.store;
    let snapshots = catalog::list_snapshots(&**store).await?;
    let mut rows: Vec<Listed> = futures::stream::iter(snapshots)
        .map(|(id, meta)| {
            let store = store.clone();
            async move {
                // A damaged manifest is listed as such; the others are listed all the same.
                let manifest = match restore::read_manifest_shallow(&*store, &id).await {
                    Ok(manifest) => manifest,
                    Err(e) if e.is_damage() => {
                        return Ok::<_, crate::Error>(Listed {
                            id,
                            size: 0,
                            stored: 0,
                            entries: 0,
                            chunks: 0,
                            created: meta.last_modified,
                            damage: Some(e.to_string()),
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Listed {
                    id,
                    size: manifest.size,
                    stored: manifest.unique_chunks().iter().map(|c| c.stored_size).sum(),
                    entries: usize::try_from(manifest.entry_count()).unwrap_or(usize::MAX),
                    chunks: manifest.chunks.len(),
                    created: meta.last_modified,
                    damage: None,
                })
            }
        })
        .buffered(session.jobs)
        .try_collect()
        .await?;
    rows.sort_by_key(|row| std::cmp::Reverse(row.created));
    Ok(rows)
}

/// Restores a snapshot into the directory `dir` (created atomically).
pub async fn fetch_to_dir(
    session: &Session,
    id: &SnapshotId,
    manifest: &Manifest,
    dir: &Path,
    force: bool,
) -> Result<ExtractReport> {
    let counters = Arc::new(Progress::default());
    let _bar = session.reporter.progress("fetching", &counters);
    restore::fetch_to_dir(
        session.store.clone(),
        manifest,
        dir,
        ExtractOptions { replace: force, ..ExtractOptions::default() },
        session.jobs,
        counters,
    )
    .await
    .with_context(|| format!("cannot restore snapshot {id}"))
}
