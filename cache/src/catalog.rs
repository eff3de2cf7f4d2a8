//! What a store holds beyond chunks: snapshots by id, key records and refs.
//!
//! - A **key record** (`v1/keys/<hex>`) maps a cache key to a snapshot id and carries what is
//!   time- or host-dependent (creation time, builder version, durations), which must stay out
//!   of the manifest so that ids are reproducible.
//! - A **ref** (`v1/refs/<name>`) is a mutable name for a snapshot, updated by
//!   compare-and-swap so that two writers never lose each other's update silently.
//!
//! - A **head** (`v1/heads/<hex>`) names the newest snapshot built for one repository on one
//!   system key: the checkpoint the next build's install starts from. It is a side record,
//!   overwritten by each build; losing it costs one clean build, never correctness.
//!
//! Snapshot queries accept a full id (`sha256:<hex>`), the bare hex, a unique hex prefix of at
//! least [`MIN_PREFIX`] digits, or a ref name.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{Digest, SnapshotId};
use crate::error::{Error, Result};
use crate::layout::{self, SNAPSHOTS};
use crate::store::{ObjectMeta, PutMode, Store, StoreError};

/// Shortest id prefix accepted in a query.
pub const MIN_PREFIX: usize = 6;
/// Largest key record or ref read.
pub const MAX_RECORD_BYTES: u64 = 1024 * 1024;
pub const KEY_FORMAT: &str = "envbuild.key.v1";
pub const REF_FORMAT: &str = "envbuild.ref.v1";
pub const HEAD_FORMAT: &str = "envbuild.head.v1";

/// The newest build of a repository on a system key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub format: String,
    pub repository: String,
    pub system_key: Digest,
    pub snapshot: SnapshotId,
    pub env_key: Digest,
    pub updated: String,
}

/// The lineage of `repository` on `system_key`: where its head lives.
pub fn lineage(repository: &str, system_key: &Digest) -> Digest {
    let mut hasher = crate::digest::Hasher::new();
    hasher.update(HEAD_FORMAT.as_bytes());
    hasher.update(b"\0");
    hasher.update(repository.as_bytes());
    hasher.update(b"\0");
    hasher.update(system_key.as_bytes());
    hasher.finish()
}

/// The head of `repository` on `system_key`, if one was recorded.
pub async fn read_head(
    store: &dyn Store,
    repository: &str,
    system_key: &Digest,
) -> Result<Option<HeadRecord>> {
    Ok(read_json(store, &layout::head(&lineage(repository, system_key))).await?.map(|(record, _)| record))
}

/// Records `record` as the head of its lineage (the newest build wins).
pub async fn write_head(store: &dyn Store, record: &HeadRecord) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(e.to_string()))?);
    store
        .put(&layout::head(&lineage(&record.repository, &record.system_key)), bytes, PutMode::Overwrite)
        .await?;
    Ok(())
}

/// A cache key's entry: which snapshot it built, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub format: String,
    pub key: Digest,
    pub snapshot: SnapshotId,
    /// RFC 3339, UTC.
    pub created: String,
    /// The envbuild version that built it.
    pub builder: String,
    /// Anything else worth keeping: durations, sizes, the other key of the pair.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub info: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    pub format: String,
    pub snapshot: SnapshotId,
    pub updated: String,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Every snapshot in the store with its manifest object's metadata.
pub async fn list_snapshots(store: &dyn Store) -> Result<Vec<(SnapshotId, ObjectMeta)>> {
    let mut out: Vec<_> = store
        .list(SNAPSHOTS)
        .await?
        .into_iter()
        .filter_map(|meta| layout::parse_snapshot(meta.path.as_str()).map(|id| (id, meta)))
        .collect();
    out.sort_by(|a, b| b.1.last_modified.cmp(&a.1.last_modified).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Resolves a query (see the module docs) to a snapshot that exists.
pub async fn resolve(store: &dyn Store, query: &str) -> Result<SnapshotId> {
    let hex = query.strip_prefix(crate::digest::DIGEST_PREFIX).unwrap_or(query);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && hex.len() == 64 {
        let id = SnapshotId(Digest::from_hex(hex).map_err(|e| Error::Internal(e.to_string()))?);
        return match store.head(&layout::snapshot(&id)).await? {
            Some(_) => Ok(id),
            None => Err(Error::NoSuchSnapshot { id, store: store.location() }),
        };
    }
    if is_hex && hex.len() >= MIN_PREFIX {
        let lower = hex.to_ascii_lowercase();
        let matches: Vec<SnapshotId> = list_snapshots(store)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.0.hex().starts_with(&lower))
            .collect();
        match matches.len() {
            1 => return Ok(matches[0]),
            0 => {}
            count => {
                return Err(Error::AmbiguousSnapshot {
                    query: query.to_owned(),
                    count,
                    store: store.location(),
                });
            }
        }
    }
    if let Ok(Some((record, _))) = read_ref(store, query).await {
        return Ok(record.snapshot);
    }
    Err(Error::UnknownSnapshot { query: query.to_owned(), store: store.location() })
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    path: &layout::ObjectPath,
) -> Result<Option<(T, String)>> {
    match store.get(path, MAX_RECORD_BYTES).await {
        Ok(got) => {
            let value = serde_json::from_slice(&got.bytes).map_err(|e| Error::Io {
                context: format!("`{path}` in {} is damaged", store.location()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            Ok(Some((value, got.etag)))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn read_key(store: &dyn Store, key: &Digest) -> Result<Option<KeyRecord>> {
    Ok(read_json(store, &layout::key(key)).await?.map(|(record, _)| record))
}

/// Writes a key record; with `replace`, an existing record for the key is replaced.
pub async fn write_key(store: &dyn Store, record: &KeyRecord, replace: bool) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(e.to_string()))?);
    let mode = if replace { PutMode::Overwrite } else { PutMode::Create };
    store.put(&layout::key(&record.key), bytes, mode).await?;
    Ok(())
}

/// The ref `name` with its ETag, or `None`.
pub async fn read_ref(store: &dyn Store, name: &str) -> Result<Option<(RefRecord, String)>> {
    let path = layout::reference(name).map_err(StoreError::from)?;
    read_json(store, &path).await
}

/// Points `name` at `id` with compare-and-swap, retrying a few times on conflict.
pub async fn set_ref(store: &Arc<dyn Store>, name: &str, id: SnapshotId) -> Result<()> {
    let path = layout::reference(name).map_err(StoreError::from)?;
    let record = RefRecord { format: REF_FORMAT.to_owned(), snapshot: id, updated: now_rfc3339() };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?);
    for attempt in 0..8u32 {
        let mode = match read_ref(&**store, name).await? {
            Some((_, etag)) => PutMode::Update { etag },
            None => PutMode::Create,
        };
        match store.put(&path, bytes.clone(), mode.clone()).await {
            Ok(crate::store::PutOutcome::Written { .. }) => return Ok(()),
            // Created by someone else between our read and our write: read again.
            Ok(crate::store::PutOutcome::AlreadyExists) | Err(StoreError::Conflict { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt + 1))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { store: store.location(), path: path.to_string() }.into())
}
