//! Restore: a snapshot's stream back out of the store, verified chunk by chunk.
//!
//! [`chunk_stream`] fetches chunks in parallel (bounded) and yields them in order; each one is
//! size-checked, decompressed into a buffer of exactly its declared size, and re-hashed before
//! it is yielded, so no unverified byte ever reaches a destination. [`write_tar`] copies the
//! stream to a writer (`fetch --tar`: the exact bytes that were ingested), and
//! [`fetch_to_dir`] extracts it (`fetch --to`) into a temporary sibling of the target that is
//! renamed into place only when every entry is written, so a failure leaves nothing at the
//! target. Extraction runs on its own thread while chunks are still being fetched and
//! decompressed. [`read_file`] reads one small file from only the chunks that hold it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::chunk;
use crate::digest::{Digest, SnapshotId};
use crate::error::{Error, Result};
use crate::extract::{self, ExtractOptions, ExtractReport};
use crate::ingest::Progress;
use crate::layout;
use crate::manifest::{self, ChunkRef, MAX_MANIFEST_BYTES, Manifest};
use crate::staging;
use crate::store::{Store, StoreError};

/// Attempts at reading one object that keeps failing verification before the damage is
/// reported: a bit flipped in transit or a damaged cached copy heals on a re-read, damage in
/// the store does not.
const VERIFY_ATTEMPTS: u32 = 5;

/// Reads and checks the manifest of `id`, with its chunk list and table of contents (v2's are
/// read from their chunks, verified).
pub async fn read_manifest(store: &dyn Store, id: &SnapshotId) -> Result<Manifest> {
    let mut manifest = read_manifest_shallow(store, id).await?;
    if let Some(toc_ref) = manifest.toc_ref.clone() {
        let bytes = read_list(store, &toc_ref).await?;
        let size = manifest.size;
        manifest.toc = tokio::task::spawn_blocking(move || manifest::decode_toc(&bytes, &toc_ref, size))
            .await
            .map_err(|e| Error::Internal(format!("a table of contents decoding task failed: {e}")))?
            .map_err(|detail| manifest::ManifestError { id: id.to_string(), detail })?;
        manifest.check().map_err(|detail| manifest::ManifestError { id: id.to_string(), detail })?;
    }
    Ok(manifest)
}

/// The bytes of one of v2's lists, from its chunks, verified.
async fn read_list(store: &dyn Store, stream: &manifest::StreamRef) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(stream.size).unwrap_or(0));
    for chunk in &stream.chunks {
        bytes.extend_from_slice(&fetch_chunk(store, chunk).await?);
    }
    Ok(bytes)
}

/// Reads and checks the manifest of `id` and its chunk list, leaving a v2 table of contents
/// unread (`toc` empty, `toc_ref` set): for what needs only the chunks (gc, verify, copies,
/// listings).
pub async fn read_manifest_shallow(store: &dyn Store, id: &SnapshotId) -> Result<Manifest> {
    let path = layout::snapshot(id);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bytes = match store.get(&path, MAX_MANIFEST_BYTES).await {
            Ok(got) => got.bytes,
            Err(StoreError::NotFound { .. }) => {
                return Err(Error::NoSuchSnapshot { id: *id, store: store.location() });
            }
            Err(e) => return Err(e.into()),
        };
        let id = *id;
        let decoded = tokio::task::spawn_blocking(move || Manifest::decode(&bytes, &id))
            .await
            .map_err(|e| Error::Internal(format!("a manifest decoding task failed: {e}")))?;
        match decoded {
            Ok(mut manifest) => {
                if let Some(list) = manifest.chunks_ref.clone() {
                    let bytes = read_list(store, &list).await?;
                    let fail = |detail| manifest::ManifestError { id: id.to_string(), detail };
                    manifest.chunks = manifest::decode_chunk_list(&bytes, &list).map_err(fail)?;
                    manifest.check().map_err(fail)?;
                }
                return Ok(manifest);
            }
            Err(e) if attempt < VERIFY_ATTEMPTS => {
                tracing::warn!("{e}; reading it again");
                store.invalidate(&path).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fetches one chunk's stored object and checks it; returns the stored (compressed) bytes and
/// the raw bytes.
async fn fetch_checked(store: &dyn Store, chunk: &ChunkRef) -> Result<(Bytes, Bytes)> {
    let path = layout::chunk(&chunk.digest);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch_from(store, chunk, false).await {
            Err(Error::Corrupt(e)) if attempt < VERIFY_ATTEMPTS && !e.detail.starts_with("it is missing") => {
                tracing::warn!("{e}; reading it again");
                store.invalidate(&path).await;
            }
            other => return other,
        }
    }
}

async fn fetch_from(store: &dyn Store, chunk: &ChunkRef, uncached: bool) -> Result<(Bytes, Bytes)> {
    let path = layout::chunk(&chunk.digest);
    let limit = manifest::zstd_bound(chunk.size);
    let got = if uncached { store.get_uncached(&path, limit).await } else { store.get(&path, limit).await };
    let stored = match got {
        Ok(got) => got.bytes,
        Err(StoreError::NotFound { .. }) => {
            return Err(chunk::CorruptChunk {
                digest: chunk.digest,
                detail: format!("it is missing from {}", store.location()),
            }
            .into());
        }
        Err(StoreError::TooLarge { size, .. }) => {
            return Err(chunk::CorruptChunk {
                digest: chunk.digest,
                detail: format!("its stored object is {size} bytes, impossible for {} raw bytes", chunk.size),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if stored.len() as u64 != chunk.stored_size {
        return Err(chunk::CorruptChunk {
            digest: chunk.digest,
            detail: format!(
                "its stored object is {} bytes, the manifest says {}",
                stored.len(),
                chunk.stored_size
            ),
        }
        .into());
    }
    let chunk = *chunk;
    let raw = {
        let stored = stored.clone();
        tokio::task::spawn_blocking(move || chunk::decode(&stored, &chunk.digest, chunk.size))
            .await
            .map_err(|e| Error::Internal(format!("a decompression task failed: {e}")))??
    };
    Ok((stored, raw))
}

/// The contents of the regular file at `path` (as the table of contents names it: no `./`),
/// read from only the chunks that hold it. `None` when the snapshot has no regular file there
/// (a symlink, say) or it is over `max` bytes: callers that need it then look elsewhere.
pub async fn read_file(
    store: &dyn Store,
    manifest: &Manifest,
    path: &str,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    use crate::tar::{EntryKind, Limits, TarError, TarReader};
    let Some(entry) = manifest.toc.iter().find(|e| e.path == path && e.kind == EntryKind::File) else {
        return Ok(None);
    };
    if entry.size > max {
        return Ok(None);
    }
    // Extension headers (PAX, GNU long names) come between the entry's first block and its
    // data; the reader bounds them, and so does what is fetched here.
    let limits = Limits::default();
    let last_needed = entry.offset + entry.size + limits.max_extension + 4 * 512;
    let mut chunk_start = 0u64;
    let mut first = None;
    let mut held: Vec<u8> = Vec::new();
    for chunk in &manifest.chunks {
        let chunk_end = chunk_start + chunk.size;
        if chunk_end <= entry.offset {
            chunk_start = chunk_end;
            continue;
        }
        let base = *first.get_or_insert(chunk_start);
        held.extend_from_slice(&fetch_chunk(store, chunk).await?);
        chunk_start = chunk_end;
        // Parse as soon as the bytes held may suffice; fetch another chunk when they do not.
        let skip =
            usize::try_from(entry.offset - base).map_err(|_| Error::Internal("offset overflow".into()))?;
        let mut reader = TarReader::with_limits(&held[skip..], limits);
        let parsed = reader.next_entry().and_then(|found| {
            let Some(found) = found else {
                return Err(TarError::Truncated { offset: entry.offset, context: path.to_owned() });
            };
            // The size was checked against `max` in the table of contents; the stream must agree.
            let size = usize::try_from(found.size.min(entry.size)).unwrap_or(0);
            let mut data = vec![0u8; size];
            let filled = reader.read_data_into(&mut data)?;
            if (filled as u64) < found.size {
                return Err(TarError::Truncated { offset: found.data_offset, context: path.to_owned() });
            }
            Ok((found, data))
        });
        match parsed {
            Ok((found, data))
                if found.size == entry.size
                    && found.path.strip_prefix(b"./").unwrap_or(&found.path) == path.as_bytes() =>
            {
                return Ok(Some(data));
            }
            Ok(_) => {
                return Err(Error::Internal(format!(
                    "the table of contents puts `{path}` at byte {}, where another entry is",
                    entry.offset
                )));
            }
            Err(TarError::Truncated { .. }) if chunk_end < last_needed => {}
            Err(e) => return Err(Error::Tar(e)),
        }
    }
    Err(Error::Tar(TarError::Truncated { offset: entry.offset, context: path.to_owned() }))
}

/// Fetches one chunk and verifies it; returns its raw bytes.
pub async fn fetch_chunk(store: &dyn Store, chunk: &ChunkRef) -> Result<Bytes> {
    fetch_checked(store, chunk).await.map(|(_, raw)| raw)
}

/// Fetches one chunk from the store itself, past any local cache, and verifies it: what
/// `verify --read-data` reads.
pub async fn fetch_chunk_uncached(store: &dyn Store, chunk: &ChunkRef) -> Result<Bytes> {
    fetch_from(store, chunk, true).await.map(|(_, raw)| raw)
}

/// Fetches one chunk's stored object, verified, for copying to another store as it is.
pub async fn fetch_stored_chunk(store: &dyn Store, chunk: &ChunkRef) -> Result<Bytes> {
    fetch_checked(store, chunk).await.map(|(stored, _)| stored)
}

/// Fetches one chunk's stored object, verified by `frame`: the digest of the stored bytes,
/// learned when this process last decoded that object and found it hashed to the chunk's
/// digest. Bytes hashing to `frame` are those bytes, so hashing the compressed object (a
/// quarter of the raw size, no decompression) verifies it as completely as decoding would.
/// Anything else (damage, or a repair that compressed the chunk differently) is verified in
/// full, which names damage as [`fetch_stored_chunk`] does. Returns the object and its frame
/// digest, which differs from `frame` only after such a repair.
pub async fn fetch_stored_chunk_by_frame(
    store: &dyn Store,
    chunk: &ChunkRef,
    frame: Option<Digest>,
) -> Result<(Bytes, Digest)> {
    if let Some(frame) = frame {
        let got = store.get(&layout::chunk(&chunk.digest), manifest::zstd_bound(chunk.size)).await;
        if let Ok(got) = got
            && got.bytes.len() as u64 == chunk.stored_size
        {
            let stored = got.bytes;
            if digest_off_thread(stored.clone()).await? == frame {
                return Ok((stored, frame));
            }
        }
    }
    let stored = fetch_stored_chunk(store, chunk).await?;
    let frame = digest_off_thread(stored.clone()).await?;
    Ok((stored, frame))
}

async fn digest_off_thread(bytes: Bytes) -> Result<Digest> {
    tokio::task::spawn_blocking(move || Digest::of(&bytes))
        .await
        .map_err(|e| Error::Internal(format!("a hashing task failed: {e}")))
}

/// The verified raw bytes of `chunks`, in order, `concurrency` fetched at once.
pub fn chunk_stream(
    store: Arc<dyn Store>,
    chunks: Vec<ChunkRef>,
    concurrency: usize,
) -> impl Stream<Item = Result<Bytes>> + Send {
    stored_chunk_stream(store, chunks, concurrency).map(|pair| pair.map(|(_, raw)| raw))
}

/// Each of `chunks` as its stored object and its raw bytes, both verified, in order,
/// `concurrency` fetched at once.
pub fn stored_chunk_stream(
    store: Arc<dyn Store>,
    chunks: Vec<ChunkRef>,
    concurrency: usize,
) -> impl Stream<Item = Result<(Bytes, Bytes)>> + Send {
    futures::stream::iter(chunks)
        .map(move |chunk| {
            let store = store.clone();
            async move { fetch_checked(&*store, &chunk).await }
        })
        .buffered(concurrency.max(1))
}

/// A blocking reader over verified chunks, for code on a blocking thread inside the runtime.
pub struct ChunkReader {
    store: Arc<dyn Store>,
    chunks: std::vec::IntoIter<ChunkRef>,
    current: Bytes,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader").field("remaining", &self.chunks.len()).finish_non_exhaustive()
    }
}

impl ChunkReader {
    /// Must be created inside the runtime; read it from a blocking thread.
    pub fn new(store: Arc<dyn Store>, chunks: Vec<ChunkRef>) -> Self {
        Self {
            store,
            chunks: chunks.into_iter(),
            current: Bytes::new(),
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            let Some(chunk) = self.chunks.next() else { return Ok(0) };
            self.current =
                self.handle.block_on(fetch_chunk(&*self.store, &chunk)).map_err(std::io::Error::other)?;
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A blocking reader fed by a channel of byte pieces (read it from a blocking thread); an
/// error sent down the channel fails the read that reaches it.
pub struct ChannelReader<E> {
    rx: mpsc::Receiver<Result<Bytes, E>>,
    current: Bytes,
}

impl<E> ChannelReader<E> {
    pub fn new(rx: mpsc::Receiver<Result<Bytes, E>>) -> Self {
        Self { rx, current: Bytes::new() }
    }
}

impl<E> std::fmt::Debug for ChannelReader<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReader").field("buffered", &self.current.len()).finish_non_exhaustive()
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> Read for ChannelReader<E> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Feeds the verified stream of `manifest` to `consume` on a blocking thread, and returns what
/// it returns. A fetch error stops the consumer (its reads fail) and is the error reported.
async fn pump<T: Send + 'static>(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    concurrency: usize,
    progress: Arc<Progress>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T> + Send + 'static,
) -> Result<T> {
    progress.total.store(manifest.size, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(concurrency.max(2));
    let consumer = tokio::task::spawn_blocking(move || consume(&mut ChannelReader::new(rx)));
    let mut stream = std::pin::pin!(chunk_stream(store, manifest.chunks.clone(), concurrency));
    let mut fetch_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    break; // the consumer stopped; its error says why
                }
                progress.bytes.fetch_add(len, Ordering::Relaxed);
                progress.chunks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let _ = tx.send(Err(Error::Internal("a chunk could not be fetched".into()))).await;
                fetch_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let consumed = consumer.await.map_err(|e| Error::Internal(format!("the writer thread failed: {e}")))?;
    match fetch_error {
        Some(e) => Err(e),
        None => consumed,
    }
}

/// Writes the snapshot's stream to `out`: the exact bytes that were ingested.
pub async fn write_tar<W: Write + Send + 'static>(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    out: W,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<()> {
    pump(store, manifest, concurrency, progress, move |reader| {
        let mut out = out;
        std::io::copy(reader, &mut out).map_err(Error::io("cannot write the tar stream"))?;
        out.flush().map_err(Error::io("cannot write the tar stream"))
    })
    .await
}

/// Extracts the snapshot into `target`, which must not exist or be an empty directory.
pub async fn fetch_to_dir(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    target: &Path,
    options: ExtractOptions,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<ExtractReport> {
    fetch_to_dir_with(store, manifest, target, options, concurrency, progress, move |reader, root| {
        extract::extract(reader, root, &options)
    })
    .await
}

/// [`fetch_to_dir`] with the extraction `extract` (the stream, the staging root) instead of
/// [`extract::extract`]: the tree is moved into place only once it returns.
pub async fn fetch_to_dir_with(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    target: &Path,
    options: ExtractOptions,
    concurrency: usize,
    progress: Arc<Progress>,
    extract: impl FnOnce(&mut dyn Read, &Path) -> Result<ExtractReport> + Send + 'static,
) -> Result<ExtractReport> {
    let resolved =
        staging::resolve(target).map_err(Error::io(format!("cannot restore into `{}`", target.display())))?;
    let occupied = std::fs::symlink_metadata(&resolved).is_ok_and(|meta| {
        !(meta.is_dir() && std::fs::read_dir(&resolved).is_ok_and(|mut d| d.next().is_none()))
    });
    if occupied && !options.replace {
        return Err(Error::Io {
            context: format!("cannot restore into `{}`", target.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists and is not an empty directory (`--force` replaces it)",
            ),
        });
    }
    // Removed on every path that does not end in the rename, a dropped future included.
    let staging = staging::Staged::dir_beside(&resolved)
        .map_err(Error::io(format!("cannot create a staging directory beside `{}`", target.display())))?;
    let root = staging.path().to_path_buf();
    let report = pump(store, manifest, concurrency, progress, move |reader| extract(reader, &root)).await?;
    put_in_place(staging, &resolved)
        .map_err(Error::io(format!("cannot move the restored tree into `{}`", target.display())))?;
    Ok(report)
}

/// Renames `staged` to `target`, replacing whatever is there: an empty directory atomically;
/// anything else is first moved aside, then removed once the new one is in place.
pub fn put_in_place(staged: staging::Staged, target: &Path) -> std::io::Result<()> {
    let aside = match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
        Ok(meta) if meta.is_dir() && std::fs::remove_dir(target).is_ok() => None,
        Ok(_) => {
            let old = staging::Staged::dir_beside(target)?;
            std::fs::remove_dir(old.path())?;
            std::fs::rename(target, old.path())?;
            Some(old)
        }
    };
    if let Err(e) = std::fs::rename(staged.path(), target) {
        if let Some(old) = aside {
            // Put the old one back, then let the staging guard remove the new one.
            let _ = std::fs::rename(old.keep(), target);
        }
        return Err(e);
    }
    staged.keep();
    drop(aside); // removes the old one
    Ok(())
}
