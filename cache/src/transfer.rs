//! Copying snapshots between stores (`push`, `pull`): only what the destination lacks.
//!
//! The manifest is read and verified from the source; every distinct chunk the destination
//! does not have is read from the source, verified (decompressed and re-hashed), and written
//! to the destination create-only, in parallel; then the manifest; then the key records that
//! point at the snapshot. That order means an interrupted copy leaves no visible snapshot, only
//! chunks, and a second copy skips what already arrived. Two copies of one snapshot racing
//! each other both succeed: create-only writes make the loser's writes no-ops. The copy holds a
//! write lease on the destination so its `gc` cannot run meanwhile.
//!
//! Asking the destination about each chunk (`head`) before sending it doubles the requests of
//! a first copy, and against object stores requests, not bytes, are the cost. So the copy
//! adapts: it asks while answers say "present" often enough to be worth it (a sibling of a
//! snapshot already there), and once nearly every answer is "absent" it sends chunks
//! create-only without asking; a chunk that was there after all costs its bytes, never its
//! correctness.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};

use crate::catalog::{self, KeyRecord};
use crate::digest::SnapshotId;
use crate::error::Result;
use crate::ingest::Progress;
use crate::layout::{self, KEYS};
use crate::lease;
use crate::manifest::ChunkRef;
use crate::restore;
use crate::store::{PutMode, PutOutcome, Store};

#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub chunks: usize,
    /// Chunks sent, and their stored bytes.
    pub copied_chunks: usize,
    pub copied_bytes: u64,
    /// Stored bytes of all the snapshot's distinct chunks.
    pub total_bytes: u64,
    pub keys: usize,
    /// False when the destination already had the manifest.
    pub published: bool,
}

/// Copies snapshot `id`, and the key records pointing at it, from `from` to `to`.
pub async fn copy_snapshot(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    id: &SnapshotId,
    concurrency: usize,
    progress: &Arc<Progress>,
) -> Result<CopyReport> {
    let lease = lease::acquire_write(to).await?;
    let result = copy_leased(from, to, id, concurrency, progress).await;
    lease.release().await;
    result
}

async fn copy_leased(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    id: &SnapshotId,
    concurrency: usize,
    progress: &Arc<Progress>,
) -> Result<CopyReport> {
    let manifest = restore::read_manifest_shallow(&**from, id).await?;
    let chunks = manifest.unique_chunks();
    let mut report = CopyReport {
        chunks: chunks.len(),
        total_bytes: chunks.iter().map(|c| c.stored_size).sum(),
        ..CopyReport::default()
    };
    progress.total.store(report.total_bytes, Ordering::Relaxed);
    let asking = Arc::new(Asking::default());
    let copied: Vec<Option<u64>> = futures::stream::iter(chunks)
        .map(|chunk| {
            let (from, to, progress, asking) = (from.clone(), to.clone(), progress.clone(), asking.clone());
            async move {
                let sent = copy_chunk(&from, &to, &chunk, &asking).await?;
                progress.bytes.fetch_add(chunk.stored_size, Ordering::Relaxed);
                progress.chunks.fetch_add(1, Ordering::Relaxed);
                Ok::<_, crate::Error>(sent)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for bytes in copied.into_iter().flatten() {
        report.copied_chunks += 1;
        report.copied_bytes += bytes;
    }
    let (bytes, encoded_id) = manifest.encode()?;
    debug_assert_eq!(encoded_id, *id);
    let outcome = to.put(&layout::snapshot(id), bytes.into(), PutMode::Create).await?;
    report.published = matches!(outcome, PutOutcome::Written { .. });
    for record in keys_pointing_at(&**from, id).await? {
        catalog::write_key(&**to, &record, true).await?;
        report.keys += 1;
    }
    Ok(report)
}

/// Whether asking the destination before sending still pays (see the module docs).
#[derive(Debug, Default)]
struct Asking {
    asked: AtomicU64,
    absent: AtomicU64,
}

impl Asking {
    /// Answers seen before deciding, and the share of "absent" above which asking stops.
    const SAMPLE: u64 = 16;
    const ABSENT_SHARE: f64 = 0.9;

    fn worth_it(&self) -> bool {
        let asked = self.asked.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let absent_share = self.absent.load(Ordering::Relaxed) as f64 / asked.max(1) as f64;
        asked < Self::SAMPLE || absent_share < Self::ABSENT_SHARE
    }

    fn record(&self, present: bool) {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if !present {
            self.absent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends one chunk unless the destination has it; the stored bytes sent, if any.
async fn copy_chunk(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    chunk: &ChunkRef,
    asking: &Asking,
) -> Result<Option<u64>> {
    let path = layout::chunk(&chunk.digest);
    let mut mode = PutMode::Create;
    if asking.worth_it() {
        let existing = to.head(&path).await?;
        asking.record(existing.is_some());
        match existing {
            Some(meta) if meta.size == chunk.stored_size => return Ok(None),
            // An object of another size under this name is a damaged copy: replace it.
            Some(_) => mode = PutMode::Overwrite,
            None => {}
        }
    }
    let stored = restore::fetch_stored_chunk(&**from, chunk).await?;
    let len = stored.len() as u64;
    match to.put(&path, stored, mode).await? {
        PutOutcome::Written { .. } => Ok(Some(len)),
        PutOutcome::AlreadyExists => Ok(None),
    }
}

/// The key records of `store` that point at `id`.
async fn keys_pointing_at(store: &dyn Store, id: &SnapshotId) -> Result<Vec<KeyRecord>> {
    let mut out = Vec::new();
    for meta in store.list(KEYS).await? {
        let Some(key) = layout::parse_key(meta.path.as_str()) else { continue };
        if let Some(record) = catalog::read_key(store, &key).await?
            && record.snapshot == *id
        {
            out.push(record);
        }
    }
    Ok(out)
}
