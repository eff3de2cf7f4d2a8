//! `gc`: removes chunks that no snapshot references, once they are older than a grace period.
//!
//! Reachability: every snapshot (manifest) is a root, as are key records and refs, which point
//! at snapshots; a chunk is reachable when some manifest lists it. Snapshots themselves are
//! never collected: removing one is a decision, not garbage. What `gc` removes is therefore the
//! residue of interrupted or failed writes: chunks no manifest lists, stale leases, and the
//! backend's own leftovers (temporary files, abandoned multipart uploads), and the side
//! records of the registry API (`v1/images/`, `v1/digests/`) of snapshots removed since.
//!
//! Safety against concurrent writers has two layers. `gc` holds a lease and refuses to run
//! beside a live writer (see `lease`), which rules out deleting a chunk a writer has just found
//! and is about to reference. And it only deletes objects older than the grace period, so even a
//! writer that takes no lease (an older version, a manual copy) is not cut short.
//!
//! A manifest that is damaged (it does not decode, is over its bound, is not a file) is
//! reported and left in place, and collection goes on from the others: a damaged snapshot
//! cannot be restored anyway, and pushing it again from another store re-sends every chunk it
//! lacks. A store that fails to answer, on the other hand, stops `gc` before it deletes
//! anything: it cannot know what the unread manifests reference.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::catalog;
use crate::digest::{Digest, SnapshotId};
use crate::error::{Error, Result};
use crate::layout::ObjectPath;
use crate::layout::{self, CHUNKS};
use crate::lease;
use crate::restore;
use crate::store::{ObjectMeta, Store, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    pub grace: Duration,
    pub dry_run: bool,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub snapshots: usize,
    pub chunks: usize,
    pub reachable_chunks: usize,
    /// Unreachable chunks removed (or, in a dry run, that would be).
    pub removed_chunks: usize,
    pub removed_bytes: u64,
    /// Unreachable chunks kept because they are younger than the grace period.
    pub young_chunks: usize,
    pub removed_leases: usize,
    pub removed_uploads: u64,
    /// Image records and digest pointers (`v1/images/`, `v1/digests/`) of snapshots that are
    /// gone.
    pub removed_image_records: usize,
    /// Snapshots whose manifests are damaged, and how: reported, left in place.
    pub damaged: Vec<(SnapshotId, String)>,
}

pub async fn gc(store: &Arc<dyn Store>, options: GcOptions) -> Result<GcReport> {
    let lease = lease::acquire_gc(store).await?;
    let result = collect(store, options).await;
    lease.release().await;
    result
}

/// The image records and digest pointers (side records of the registry API) whose snapshot
/// is not in `snapshots`, older than `cutoff`. Listed after the snapshots, so a record
/// written for a snapshot stored since is young, never an orphan.
async fn orphan_image_records(
    store: &Arc<dyn Store>,
    snapshots: &HashSet<SnapshotId>,
    cutoff: SystemTime,
) -> Result<Vec<ObjectPath>> {
    let mut orphans = Vec::new();
    for meta in store.list(layout::IMAGES).await? {
        let named =
            meta.path.as_str().strip_prefix(layout::IMAGES).and_then(|hex| Digest::from_hex(hex).ok());
        if meta.last_modified <= cutoff && named.is_none_or(|d| !snapshots.contains(&SnapshotId(d))) {
            orphans.push(meta.path);
        }
    }
    let pointers: Vec<ObjectMeta> =
        store.list(layout::DIGESTS).await?.into_iter().filter(|m| m.last_modified <= cutoff).collect();
    let reads = futures::stream::iter(pointers)
        .map(|meta| {
            let store = store.clone();
            async move {
                let target = match store.get(&meta.path, 1024).await {
                    Ok(got) => String::from_utf8_lossy(&got.bytes).trim().parse::<Digest>().ok(),
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) if e.is_damage() || matches!(e, StoreError::TooLarge { .. }) => None,
                    Err(e) => return Err(e),
                };
                Ok(target.is_none_or(|d| !snapshots.contains(&SnapshotId(d))).then_some(meta.path))
            }
        })
        .buffer_unordered(16);
    let mut reads = std::pin::pin!(reads);
    while let Some(orphan) = reads.next().await {
        orphans.extend(orphan?);
    }
    Ok(orphans)
}

async fn collect(store: &Arc<dyn Store>, options: GcOptions) -> Result<GcReport> {
    let mut report = GcReport::default();
    let cutoff = SystemTime::now().checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    // List chunks first: a chunk stored after this listing is not a candidate at all.
    let chunks: Vec<(Digest, ObjectMeta)> = store
        .list(CHUNKS)
        .await?
        .into_iter()
        .filter_map(|m| layout::parse_chunk(m.path.as_str()).map(|d| (d, m)))
        .collect();
    report.chunks = chunks.len();
    let mut reachable: HashSet<Digest> = HashSet::new();
    let listed = catalog::list_snapshots(&**store).await?;
    for (id, _) in &listed {
        let id = *id;
        report.snapshots += 1;
        match restore::read_manifest_shallow(&**store, &id).await {
            Ok(manifest) => reachable.extend(manifest.unique_chunks().iter().map(|c| c.digest)),
            Err(e) if e.is_damage() => report.damaged.push((id, e.to_string())),
            Err(e) => {
                return Err(Error::Busy(format!(
                    "gc stopped before deleting anything: snapshot {id} cannot be read ({e})"
                )));
            }
        }
    }
    let snapshots: HashSet<SnapshotId> = listed.into_iter().map(|(id, _)| id).collect();
    let orphans = orphan_image_records(store, &snapshots, cutoff).await?;
    report.removed_image_records = orphans.len();
    report.reachable_chunks = chunks.iter().filter(|(d, _)| reachable.contains(d)).count();
    let mut doomed = Vec::new();
    for (digest, meta) in chunks {
        if reachable.contains(&digest) {
            continue;
        }
        if meta.last_modified > cutoff {
            report.young_chunks += 1;
            continue;
        }
        report.removed_bytes += meta.size;
        doomed.push(meta.path);
    }
    report.removed_chunks = doomed.len();
    let stale_leases = lease::stale(store).await?;
    report.removed_leases = stale_leases.len();
    if options.dry_run {
        return Ok(report);
    }
    let deletions = futures::stream::iter(doomed.into_iter().chain(stale_leases).chain(orphans))
        .map(|path| {
            let store = store.clone();
            async move { store.delete(&path).await }
        })
        .buffer_unordered(options.concurrency.max(1));
    let mut deletions = std::pin::pin!(deletions);
    while let Some(result) = deletions.next().await {
        result?;
    }
    report.removed_uploads = store.sweep_abandoned(cutoff).await?;
    Ok(report)
}
