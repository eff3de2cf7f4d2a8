//! What a store may accept from a writer it does not trust: the checks `envbuild serve` makes
//! before a write reaches its store, so that an object at a chunk, manifest or key path is
//! what that path promises, whoever sent it.
//!
//! - a chunk (`v1/chunks/ab/<hex>`) must be one zstd frame declaring its size, within the
//!   chunk limit, whose content hashes to `<hex>`;
//! - a manifest (`v1/snapshots/<hex>`) must hash to `<hex>`, be a well-formed manifest, and
//!   arrive after its chunks: every chunk it lists (and, in v2, the chunks of its chunk list
//!   and table of contents, and the list itself, read and checked) must already be stored, so
//!   a published snapshot is always whole;
//! - a key record (`v1/keys/<hex>`) or a ref must parse, name the key of its path, and point
//!   at a snapshot that is stored.
//!
//! Other objects (secrets, leases, anything else under a valid path) are opaque and only
//! size-bounded by the caller. Envbuild's own writers satisfy these checks by construction
//! (chunks, then the manifest, then key records), so they cost them nothing but the
//! round trips.

use futures::{StreamExt, TryStreamExt};

use crate::catalog::{KeyRecord, RefRecord};
use crate::chunk::{self, CorruptChunk};
use crate::digest::{Digest, SnapshotId};
use crate::layout::{self, ObjectPath};
use crate::manifest::{Manifest, ManifestError};
use crate::store::{Store, StoreError};

/// How many chunk HEADs a manifest check has in flight at once.
const HEAD_CONCURRENCY: usize = 32;

/// A write was refused. Messages name the object and say what is wrong with it; they carry
/// nothing of the server (no store location), so they can be shown to the writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("the body is not the chunk its path names: {0}")]
    Chunk(#[from] CorruptChunk),
    #[error("the body is not the manifest its path names: {}", .0.detail)]
    Manifest(ManifestError),
    #[error(
        "snapshot {snapshot} lists {missing} chunk(s) the store does not have (first: {first}); upload the chunks before the manifest"
    )]
    MissingChunks { snapshot: SnapshotId, missing: usize, first: Digest },
    #[error("the body is not a valid {what}: {detail}")]
    Record { what: &'static str, detail: String },
    #[error(
        "the {what} points at snapshot {snapshot}, which the store does not have; upload the snapshot first"
    )]
    MissingSnapshot { what: &'static str, snapshot: SnapshotId },
    /// The store failed while checking; not the writer's fault.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `bytes` as the object at `path` (see the module docs). `Ok` means the store may
/// take it.
pub async fn check(store: &dyn Store, path: &ObjectPath, bytes: &[u8]) -> Result<(), Refusal> {
    let path = path.as_str();
    if let Some(digest) = layout::parse_chunk(path) {
        chunk::verify_stored(bytes, &digest)?;
    } else if let Some(id) = layout::parse_snapshot(path) {
        let mut manifest = Manifest::decode(bytes, &id).map_err(Refusal::Manifest)?;
        // v2: the lists' own chunks first, then the chunks the list names.
        check_chunks_present(store, &id, &manifest).await?;
        if let Some(list) = manifest.chunks_ref.clone() {
            let mut text = Vec::new();
            for chunk in &list.chunks {
                match crate::restore::fetch_chunk(store, chunk).await {
                    Ok(raw) => text.extend_from_slice(&raw),
                    Err(crate::Error::Store(e)) => return Err(Refusal::Store(e)),
                    Err(e) => {
                        return Err(Refusal::Manifest(ManifestError {
                            id: id.to_string(),
                            detail: e.to_string(),
                        }));
                    }
                }
            }
            let fail = |detail| Refusal::Manifest(ManifestError { id: id.to_string(), detail });
            manifest.chunks = crate::manifest::decode_chunk_list(&text, &list).map_err(fail)?;
            manifest.check().map_err(fail)?;
            check_chunks_present(store, &id, &manifest).await?;
        }
    } else if let Some(key) = layout::parse_key(path) {
        let record: KeyRecord = parse(bytes, "key record")?;
        if record.key != key {
            return Err(Refusal::Record {
                what: "key record",
                detail: format!("it is the record of key {}, not of {key}", record.key),
            });
        }
        check_snapshot_present(store, "key record", &record.snapshot).await?;
    } else if path.starts_with(layout::REFS) {
        let record: RefRecord = parse(bytes, "ref")?;
        check_snapshot_present(store, "ref", &record.snapshot).await?;
    } else if path.starts_with(layout::HEADS) {
        let record: crate::catalog::HeadRecord = parse(bytes, "head")?;
        check_snapshot_present(store, "head", &record.snapshot).await?;
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| Refusal::Record { what, detail: e.to_string() })
}

async fn check_snapshot_present(
    store: &dyn Store,
    what: &'static str,
    id: &SnapshotId,
) -> Result<(), Refusal> {
    match store.head(&layout::snapshot(id)).await? {
        Some(_) => Ok(()),
        None => Err(Refusal::MissingSnapshot { what, snapshot: *id }),
    }
}

async fn check_chunks_present(
    store: &dyn Store,
    id: &SnapshotId,
    manifest: &Manifest,
) -> Result<(), Refusal> {
    let unique = manifest.unique_chunks();
    let missing: Vec<Digest> = futures::stream::iter(unique)
        .map(|chunk| async move {
            let present = store.head(&layout::chunk(&chunk.digest)).await?.is_some();
            Ok::<_, StoreError>((!present).then_some(chunk.digest))
        })
        .buffered(HEAD_CONCURRENCY)
        .try_filter_map(|missing| async move { Ok(missing) })
        .try_collect()
        .await?;
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(Refusal::MissingChunks { snapshot: *id, missing: missing.len(), first: *first }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::ingest::{self, IngestOptions, Progress};
    use crate::store::memory::MemoryStore;
    use crate::store::{PutMode, Store};
    use crate::testing::{RawEntry, noise, write_tar};

    #[tokio::test]
    async fn chunks_then_manifest_then_key() {
        // A real snapshot in one store; its objects are offered one by one to another.
        let source: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let tar = write_tar(&[RawEntry::dir("etc/"), RawEntry::file("etc/big", &noise(6_000_000, 1))]);
        let options = IngestOptions { spill_dir: std::env::temp_dir(), ..IngestOptions::default() };
        let report = ingest::ingest(
            source.clone(),
            Box::new(std::io::Cursor::new(tar)),
            options,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        let id = report.id;
        let manifest_bytes = source.get(&layout::snapshot(&id), u64::MAX).await.unwrap().bytes;
        let manifest = crate::restore::read_manifest_shallow(&*source, &id).await.unwrap();
        assert!(manifest.chunks.len() > 1);
        let store = MemoryStore::new();

        // The manifest first: refused, naming a missing chunk.
        let refused = check(&store, &layout::snapshot(&id), &manifest_bytes).await.unwrap_err();
        assert!(matches!(refused, Refusal::MissingChunks { .. }), "{refused}");
        // A chunk path with another chunk's body: refused.
        let first = manifest.chunks[0].digest;
        let wrong = chunk::compress(b"not the chunk", 3).unwrap();
        assert!(matches!(check(&store, &layout::chunk(&first), &wrong).await, Err(Refusal::Chunk(_))));
        // The lists' chunks alone: still refused, naming a data chunk the list names.
        let lists: Vec<_> =
            manifest.chunks_ref.iter().chain(&manifest.toc_ref).flat_map(|l| l.chunks.clone()).collect();
        for c in &lists {
            let stored = source.get(&layout::chunk(&c.digest), u64::MAX).await.unwrap().bytes;
            store.put(&layout::chunk(&c.digest), stored, PutMode::Create).await.unwrap();
        }
        match check(&store, &layout::snapshot(&id), &manifest_bytes).await.unwrap_err() {
            Refusal::MissingChunks { first, .. } => assert_eq!(first, manifest.chunks[0].digest),
            other => panic!("{other}"),
        }
        for c in manifest.unique_chunks() {
            let stored = source.get(&layout::chunk(&c.digest), u64::MAX).await.unwrap().bytes;
            check(&store, &layout::chunk(&c.digest), &stored).await.unwrap();
            store.put(&layout::chunk(&c.digest), stored, PutMode::Overwrite).await.unwrap();
        }
        check(&store, &layout::snapshot(&id), &manifest_bytes).await.unwrap();
        // The manifest under another id: refused.
        let other = SnapshotId(Digest::of(b"other"));
        let refused = check(&store, &layout::snapshot(&other), &manifest_bytes).await;
        assert!(matches!(refused, Err(Refusal::Manifest(_))));

        let key = Digest::of(b"key");
        let record = KeyRecord {
            format: crate::catalog::KEY_FORMAT.into(),
            key,
            snapshot: id,
            created: "2026-01-01T00:00:00Z".into(),
            builder: "test".into(),
            info: serde_json::Value::Null,
        };
        let record_bytes = serde_json::to_vec(&record).unwrap();
        // Before the snapshot is stored: refused.
        let refused = check(&store, &layout::key(&key), &record_bytes).await;
        assert!(matches!(refused, Err(Refusal::MissingSnapshot { .. })));
        store.put(&layout::snapshot(&id), manifest_bytes, PutMode::Create).await.unwrap();
        check(&store, &layout::key(&key), &record_bytes).await.unwrap();
        // Under another key's path, or not a record at all: refused.
        let elsewhere = layout::key(&Digest::of(b"elsewhere"));
        assert!(matches!(check(&store, &elsewhere, &record_bytes).await, Err(Refusal::Record { .. })));
        assert!(matches!(check(&store, &layout::key(&key), b"{}").await, Err(Refusal::Record { .. })));
        // Opaque objects pass.
        let lease = ObjectPath::new("v1/leases/x").unwrap();
        check(&store, &lease, &Bytes::from_static(b"anything")).await.unwrap();
    }
}
