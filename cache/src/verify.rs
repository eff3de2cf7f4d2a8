//! `verify`: is every snapshot whole?
//!
//! Structure is always checked: each manifest is read, re-hashed against its id and checked
//! (`Manifest::decode`), and every chunk it lists must exist with the stored size the
//! manifest records. With `read_data`, every distinct chunk is also downloaded, decompressed
//! and re-hashed. Without explicit ids, every snapshot is checked, and so are key records and
//! refs, which must point at snapshots that exist. Problems are collected, not thrown: the
//! report names each damaged object so one run shows all of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;

use crate::catalog::{self, KeyRecord, RefRecord};
use crate::digest::{Digest, SnapshotId};
use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::layout::{self, KEYS, REFS};
use crate::manifest::ChunkRef;
use crate::restore;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged object: `snapshot sha256:…`, `chunk sha256:…`, `key …`, `ref …`.
    pub object: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub chunks: usize,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

/// Checks `ids`, or everything when `ids` is empty.
pub async fn verify(
    store: &Arc<dyn Store>,
    ids: &[SnapshotId],
    read_data: bool,
    concurrency: usize,
    progress: &Arc<Progress>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let all = ids.is_empty();
    let ids: Vec<SnapshotId> = if all {
        catalog::list_snapshots(&**store).await?.into_iter().map(|(id, _)| id).collect()
    } else {
        ids.to_vec()
    };
    // Each distinct (digest, sizes) once, with the first snapshot that uses it.
    let mut chunks: HashMap<ChunkRef, SnapshotId> = HashMap::new();
    for id in &ids {
        report.snapshots += 1;
        match restore::read_manifest(&**store, id).await {
            Ok(manifest) => {
                for chunk in manifest.unique_chunks() {
                    chunks.entry(chunk).or_insert(*id);
                }
            }
            // A store that fails stops the check; a bad object is reported, and the rest checked.
            Err(e) if !e.is_damage() && matches!(e, Error::Store(_)) => return Err(e),
            Err(e) => {
                report.problems.push(Problem { object: format!("snapshot {id}"), detail: e.to_string() });
            }
        }
    }
    report.chunks = chunks.len();
    progress
        .total
        .store(chunks.keys().map(|c| if read_data { c.stored_size } else { 1 }).sum(), Ordering::Relaxed);
    let checks = futures::stream::iter(chunks)
        .map(|(chunk, id)| {
            let store = store.clone();
            async move { (chunk, id, check_chunk(&*store, &chunk, read_data).await) }
        })
        .buffer_unordered(concurrency.max(1));
    let mut checks = std::pin::pin!(checks);
    while let Some((chunk, id, outcome)) = checks.next().await {
        progress.chunks.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(if read_data { chunk.stored_size } else { 1 }, Ordering::Relaxed);
        match outcome {
            Ok(read) => report.bytes_read += read,
            Err(Error::Store(e)) if !e.is_not_found() && !e.is_damage() => return Err(Error::Store(e)),
            Err(e) => report.problems.push(Problem {
                object: format!("chunk {}", chunk.digest),
                detail: format!(
                    "{} (used by snapshot {id})",
                    strip_chunk_prefix(&e.to_string(), &chunk.digest)
                ),
            }),
        }
    }
    if all {
        check_pointers(&**store, &mut report).await?;
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// "chunk X is corrupt: Y" → "Y", since the problem already names the chunk.
fn strip_chunk_prefix(message: &str, digest: &Digest) -> String {
    message.strip_prefix(&format!("chunk {digest} is corrupt: ")).unwrap_or(message).to_owned()
}

/// Bytes read when the chunk is sound.
async fn check_chunk(store: &dyn Store, chunk: &ChunkRef, read_data: bool) -> Result<u64> {
    if read_data {
        // The store's own bytes, never a local copy of them: a cache cannot vouch for the store.
        restore::fetch_chunk_uncached(store, chunk).await?;
        return Ok(chunk.stored_size);
    }
    let corrupt =
        |detail: String| -> Error { crate::chunk::CorruptChunk { digest: chunk.digest, detail }.into() };
    match store.head(&layout::chunk(&chunk.digest)).await? {
        None => Err(corrupt(format!("it is missing from {}", store.location()))),
        Some(meta) if meta.size != chunk.stored_size => Err(corrupt(format!(
            "its stored object is {} bytes, the manifest says {}",
            meta.size, chunk.stored_size
        ))),
        Some(_) => Ok(0),
    }
}

/// What is wrong with the snapshot a pointer names, if anything.
async fn missing_snapshot(store: &dyn Store, snapshot: &SnapshotId) -> Result<Option<String>> {
    match store.head(&layout::snapshot(snapshot)).await {
        Ok(Some(_)) => Ok(None),
        Ok(None) => Ok(Some(format!("it points at snapshot {snapshot}, which does not exist"))),
        Err(e) if e.is_damage() => Ok(Some(format!("it points at snapshot {snapshot}: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// Key records and refs must point at snapshots that exist.
async fn check_pointers(store: &dyn Store, report: &mut VerifyReport) -> Result<()> {
    for meta in store.list(KEYS).await? {
        let Some(key) = layout::parse_key(meta.path.as_str()) else { continue };
        let object = format!("key {key}");
        match catalog::read_key(store, &key).await {
            Ok(Some(KeyRecord { snapshot, .. })) => {
                if let Some(detail) = missing_snapshot(store, &snapshot).await? {
                    report.problems.push(Problem { object, detail });
                }
            }
            Ok(None) => {}
            Err(e) => report.problems.push(Problem { object, detail: e.to_string() }),
        }
    }
    for meta in store.list(REFS).await? {
        let name = meta.path.as_str().trim_start_matches(REFS).to_owned();
        match catalog::read_ref(store, &name).await {
            Ok(Some((RefRecord { snapshot, .. }, _))) => {
                if let Some(detail) = missing_snapshot(store, &snapshot).await? {
                    report.problems.push(Problem { object: format!("ref {name}"), detail });
                }
            }
            Ok(None) => {}
            Err(e) => report.problems.push(Problem { object: format!("ref {name}"), detail: e.to_string() }),
        }
    }
    Ok(())
}
