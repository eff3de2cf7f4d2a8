//! A snapshot as a one-layer OCI image: the form `envbuild serve`'s registry API offers it in
//! (see `serve::registry`), and whose uncompressed variant `fetch --oci` writes.
//!
//! The layer has two variants, both read from the stored chunks, never stored a second time:
//!
//! - **zstd** (`tar+zstd`): a stored chunk is one zstd frame of its raw bytes, and zstd frames
//!   concatenate, so the stored objects one after another *are* a zstd-compressed tar;
//! - **tar** (uncompressed): the raw chunks one after another, the snapshot's exact tar stream
//!   (what `fetch --tar` writes), for clients without zstd (Docker engines before 23).
//!
//! Either way every chunk is verified against its digest before a byte of it is served. The
//! zstd variant is verified cheaply: when this process decodes a chunk and finds it sound, it
//! keeps the digest of the stored object (its *frame digest*, in memory with the image), and
//! later serves of that object only hash the compressed bytes and compare (see
//! `restore::fetch_stored_chunk_by_frame`). Frame digests are never read from the store: a
//! record anyone with write access to the bucket could forge must not vouch for bytes.
//!
//! A manifest names its layer by digest and size, and the configuration names the tar's
//! digest (its `diff_id`): sha256 over whole streams, which the snapshot manifest does not
//! hold. They are computed once, in one pass over every chunk, and kept in a side record
//! (`v1/images/<snapshot>`), with a pointer `v1/digests/<digest>` from every blob and manifest
//! digest to its snapshot, so a request naming only a digest finds its image. The snapshot
//! manifest is untouched.
//!
//! The record is a cache, trusted no further than can be checked for free: its snapshot and
//! layer sizes must agree with the manifest, and the documents (configuration and manifest)
//! are always generated from the snapshot, never read from the record. A wrong record can at
//! worst carry a wrong layer digest, which every client detects as a digest mismatch. A store
//! that refuses the record (a read-only token) only costs the pass again in another process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use envbuild_builder::oci::{self, Blob, ImageDocuments, Layer};
use envbuild_builder::pipeline;
use envbuild_cache::catalog::MAX_RECORD_BYTES;
use envbuild_cache::digest::Hasher;
use envbuild_cache::manifest::{ChunkRef, Manifest};
use envbuild_cache::store::PutMode;
use envbuild_cache::{Digest, SnapshotId, Store, layout, restore};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::build;
use crate::error::{Error, Result};

/// The label naming the environment key of the snapshot's build.
pub const ENV_KEY_LABEL: &str = "envbuild.env-key";
const RECORD_FORMAT: &str = "envbuild.image.v1";

/// Which layer an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The stored zstd frames, concatenated.
    Zstd,
    /// The uncompressed tar stream.
    Tar,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Zstd => "zstd",
            Variant::Tar => "tar",
        }
    }
}

/// The side record: what one pass over the chunks found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub format: String,
    pub snapshot: SnapshotId,
    /// The uncompressed layer.
    pub tar: Blob,
    /// The zstd layer.
    pub zstd: Blob,
    /// The manifests' digests as generated when the record was written. Documents are always
    /// generated afresh; these tell a generator that changed (so digests handed out earlier
    /// no longer name anything) from one that did not.
    pub manifests: ManifestDigests,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDigests {
    pub tar: Digest,
    pub zstd: Digest,
}

/// What a digest names within an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Manifest(Variant),
    Config,
    Layer(Variant),
}

/// A snapshot's image: its manifest, the record, and both variants' documents.
#[derive(Debug)]
pub struct Image {
    pub id: SnapshotId,
    pub manifest: Arc<Manifest>,
    pub record: ImageRecord,
    tar: ImageDocuments,
    zstd: ImageDocuments,
    /// Stored object digest by chunk digest, for chunks this process decoded and found sound.
    frames: FrameDigests,
}

/// Frame digests learned by this process (see the module docs).
#[derive(Debug, Default)]
struct FrameDigests(std::sync::Mutex<HashMap<Digest, Digest>>);

impl FrameDigests {
    fn get(&self, chunk: &Digest) -> Option<Digest> {
        self.lock().get(chunk).copied()
    }

    fn note(&self, chunk: Digest, frame: Digest) {
        self.lock().insert(chunk, frame);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Digest>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Image {
    pub fn documents(&self, variant: Variant) -> &ImageDocuments {
        match variant {
            Variant::Zstd => &self.zstd,
            Variant::Tar => &self.tar,
        }
    }

    pub fn layer(&self, variant: Variant) -> Blob {
        match variant {
            Variant::Zstd => self.record.zstd,
            Variant::Tar => self.record.tar,
        }
    }

    /// What `digest` names in this image, if anything.
    pub fn find(&self, digest: &Digest) -> Option<Part> {
        [Variant::Zstd, Variant::Tar].into_iter().find_map(|variant| {
            let docs = self.documents(variant);
            if docs.manifest_blob().digest == *digest {
                Some(Part::Manifest(variant))
            } else if docs.config_blob().digest == *digest {
                Some(Part::Config)
            } else if self.layer(variant).digest == *digest {
                Some(Part::Layer(variant))
            } else {
                None
            }
        })
    }

    /// Every digest the image has: what the pointers name.
    pub fn digests(&self) -> Vec<Digest> {
        vec![
            self.zstd.manifest_blob().digest,
            self.tar.manifest_blob().digest,
            self.tar.config_blob().digest,
            self.record.zstd.digest,
            self.record.tar.digest,
        ]
    }
}

/// The labels of a snapshot's image: its id and the keys it was built under.
pub fn labels(id: &SnapshotId, manifest: &Manifest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(pipeline::SNAPSHOT_LABEL.to_owned(), id.to_string())]);
    if let Some(keys) = &manifest.keys {
        for (field, label) in [("system_key", pipeline::SYSTEM_KEY_LABEL), ("env_key", ENV_KEY_LABEL)] {
            if let Some(key) = keys.get(field).and_then(|v| v.as_str()) {
                labels.insert(label.to_owned(), key.to_owned());
            }
        }
    }
    labels
}

/// The documents of both variants, from the snapshot and its layers' digests.
fn documents(
    id: &SnapshotId,
    manifest: &Manifest,
    tar: Blob,
    zstd: Blob,
) -> Result<(ImageDocuments, ImageDocuments)> {
    let config = build::image_config(manifest)?;
    let labels = labels(id, manifest);
    let make =
        |media_type, blob| oci::documents(&config, &labels, Layer { media_type, blob, diff_id: tar.digest });
    Ok((make(oci::TAR_LAYER, tar)?, make(oci::ZSTD_LAYER, zstd)?))
}

/// Sizes of both layers, from the manifest alone.
fn layer_sizes(manifest: &Manifest) -> (u64, u64) {
    (manifest.size, manifest.chunks.iter().map(|c| c.stored_size).sum())
}

/// The image of snapshot `id` (whose verified manifest is `manifest`): from its record, or
/// computed by reading every chunk once and recorded.
pub async fn open(
    store: &Arc<dyn Store>,
    id: SnapshotId,
    manifest: Arc<Manifest>,
    jobs: usize,
) -> Result<Image> {
    if let Some(record) = read_record(&**store, &id, &manifest).await {
        let (tar, zstd) = documents(&id, &manifest, record.tar, record.zstd)?;
        let image = Image { id, manifest, record, tar, zstd, frames: FrameDigests::default() };
        let current = ManifestDigests {
            tar: image.tar.manifest_blob().digest,
            zstd: image.zstd.manifest_blob().digest,
        };
        if current != image.record.manifests {
            tracing::warn!(snapshot = %id, "the image record was written by another version of the documents; recording the current digests");
            let record = ImageRecord { manifests: current, ..image.record };
            let image = Image { record, ..image };
            write_record(&**store, &image).await;
            return Ok(image);
        }
        return Ok(image);
    }
    let frames = FrameDigests::default();
    let (tar, zstd) = layer_digests(store.clone(), &manifest, &frames, jobs).await?;
    let (tar_docs, zstd_docs) = documents(&id, &manifest, tar, zstd)?;
    let record = ImageRecord {
        format: RECORD_FORMAT.to_owned(),
        snapshot: id,
        tar,
        zstd,
        manifests: ManifestDigests {
            tar: tar_docs.manifest_blob().digest,
            zstd: zstd_docs.manifest_blob().digest,
        },
    };
    let image = Image { id, manifest, record, tar: tar_docs, zstd: zstd_docs, frames };
    write_record(&**store, &image).await;
    Ok(image)
}

/// The stored record, if there is one that agrees with the manifest. Anything else (none,
/// unreadable, disagreeing) is a reason to compute it again, and said in the log.
async fn read_record(store: &dyn Store, id: &SnapshotId, manifest: &Manifest) -> Option<ImageRecord> {
    let path = layout::image(id);
    let bytes = match store.get(&path, MAX_RECORD_BYTES).await {
        Ok(got) => got.bytes,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::warn!("cannot read the image record of snapshot {id}, computing it again: {e}");
            return None;
        }
    };
    let record: ImageRecord = match serde_json::from_slice(&bytes) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!("the image record `{path}` is unreadable ({e}); computing it again");
            return None;
        }
    };
    let (tar_size, zstd_size) = layer_sizes(manifest);
    if record.format != RECORD_FORMAT
        || record.snapshot != *id
        || record.tar.size != tar_size
        || record.zstd.size != zstd_size
    {
        tracing::warn!("the image record `{path}` does not agree with snapshot {id}; computing it again");
        return None;
    }
    Some(record)
}

/// Stores the record and the digest pointers. Failing to is logged, not an error: the record
/// is a cache.
async fn write_record(store: &dyn Store, image: &Image) {
    let record = match serde_json::to_vec_pretty(&image.record) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            tracing::warn!("cannot encode the image record of snapshot {}: {e}", image.id);
            return;
        }
    };
    // Pointers first: a record is only found with its pointers in place.
    let pointer = Bytes::from(image.id.to_string());
    for digest in image.digests() {
        if let Err(e) = store.put(&layout::image_digest(&digest), pointer.clone(), PutMode::Overwrite).await {
            tracing::warn!("cannot record which snapshot has digest {digest}: {e}");
            return;
        }
    }
    if let Err(e) = store.put(&layout::image(&image.id), record, PutMode::Overwrite).await {
        tracing::warn!("cannot store the image record of snapshot {}: {e}", image.id);
    }
}

/// The snapshot whose image has a blob or manifest of `digest`, as its pointer says; the
/// caller checks the image really has it.
pub async fn snapshot_of(store: &dyn Store, digest: &Digest) -> Result<Option<SnapshotId>> {
    let got = match store.get(&layout::image_digest(digest), MAX_RECORD_BYTES).await {
        Ok(got) => got,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&got.bytes);
    Ok(text.trim().parse::<Digest>().ok().map(SnapshotId))
}

/// Both layers' blobs: one pass that fetches and verifies every chunk, hashing the stored
/// objects (the zstd layer, and each one's frame digest, noted in `frames`) and the raw bytes
/// (the tar) on a blocking thread.
async fn layer_digests(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    frames: &FrameDigests,
    jobs: usize,
) -> Result<(Blob, Blob)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Digest, Bytes, Bytes)>(jobs.max(2) * 2);
    let hashing = tokio::task::spawn_blocking(move || {
        let (mut tar, mut zstd) = (Hasher::new(), Hasher::new());
        let (mut tar_size, mut zstd_size) = (0u64, 0u64);
        let mut learned = Vec::new();
        while let Some((chunk, stored, raw)) = rx.blocking_recv() {
            zstd.update(&stored);
            tar.update(&raw);
            learned.push((chunk, Digest::of(&stored)));
            zstd_size += stored.len() as u64;
            tar_size += raw.len() as u64;
        }
        let blobs =
            (Blob { digest: tar.finish(), size: tar_size }, Blob { digest: zstd.finish(), size: zstd_size });
        (blobs, learned)
    });
    let digests: Vec<Digest> = manifest.chunks.iter().map(|c| c.digest).collect();
    let chunks = restore::stored_chunk_stream(store, manifest.chunks.clone(), jobs);
    let mut chunks = std::pin::pin!(futures::stream::iter(digests).zip(chunks));
    while let Some((digest, pair)) = chunks.next().await {
        let (stored, raw) = pair?;
        if tx.send((digest, stored, raw)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let (blobs, learned) =
        hashing.await.map_err(|e| Error::Failed(format!("hashing the layers stopped: {e}")))?;
    for (chunk, frame) in learned {
        frames.note(chunk, frame);
    }
    Ok(blobs)
}

/// Bytes `range` of the layer of `variant` of `image`, chunk by chunk as each is fetched and
/// verified, `jobs` at once. Only the chunks the range touches are read.
pub fn layer_stream(
    store: Arc<dyn Store>,
    image: Arc<Image>,
    variant: Variant,
    range: Range<u64>,
    jobs: usize,
) -> impl Stream<Item = Result<Bytes>> + Send + use<> {
    let length = move |chunk: &ChunkRef| match variant {
        Variant::Zstd => chunk.stored_size,
        Variant::Tar => chunk.size,
    };
    let mut picked = Vec::new();
    let mut offset = 0u64;
    for chunk in &image.manifest.chunks {
        let end = offset + length(chunk);
        if end > range.start && offset < range.end {
            picked.push((offset, *chunk));
        }
        if end >= range.end {
            break;
        }
        offset = end;
    }
    futures::stream::iter(picked)
        .map(move |(start, chunk)| {
            let store = store.clone();
            let image = image.clone();
            let range = range.clone();
            async move {
                let bytes = match variant {
                    Variant::Zstd => {
                        let known = image.frames.get(&chunk.digest);
                        let (stored, frame) =
                            restore::fetch_stored_chunk_by_frame(&*store, &chunk, known).await?;
                        if known != Some(frame) {
                            image.frames.note(chunk.digest, frame);
                        }
                        stored
                    }
                    Variant::Tar => restore::fetch_chunk(&*store, &chunk).await?,
                };
                let from = usize::try_from(range.start.saturating_sub(start)).unwrap_or(usize::MAX);
                let to = usize::try_from((range.end - start).min(bytes.len() as u64)).unwrap_or(usize::MAX);
                Ok(bytes.slice(from.min(to)..to))
            }
        })
        .buffered(jobs.max(1))
}
