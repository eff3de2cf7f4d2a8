//! Ingest: a root filesystem tar stream in, a published snapshot out.
//!
//! ```text
//!  input ─► Recorder ─► TarReader (table of contents, order check)
//!              │
//!              └─► Chunker ─► [bounded channel] ─► sha256 ─► exists? ─► zstd ─► put (create-only)
//!                                                    (in parallel, results kept in order)
//!  all chunks stored ─► manifest (canonical JSON) ─► put v1/snapshots/<sha256 of manifest>
//! ```
//!
//! The scan runs on one blocking thread: the [`Recorder`] hands every byte it reads to the
//! chunker untouched (so a canonical input is stored byte for byte and `fetch --tar` returns
//! it exactly), while the tar reader above it builds the table of contents and checks the
//! order. Chunks go through a channel of [`IngestOptions::concurrency`] slots to a pool of tasks
//! that hash them, skip those already stored (no compression needed), and compress and store
//! the rest; memory is bounded by the channel, the pool and the chunker's buffer, whatever the
//! size of the image.
//!
//! Publication order makes crashes harmless: every chunk is stored before the manifest, so a
//! visible manifest never references a missing chunk; an interrupted ingest leaves only
//! unreferenced chunks, which `gc` removes after its grace period. A write lease keeps `gc`
//! away for the duration (see `lease`).
//!
//! With a [`LeakScanner`], every byte of the stream (names, link targets and attributes as well
//! as contents) is searched for secret values as it passes; a hit refuses the publication
//! after the pass, naming the secret and the file, and the chunks this ingest stored are
//! deleted again, so no trace of the value stays in the store.
//!
//! Input that is not in canonical order is detected on the fly. The bytes already consumed are
//! recovered from the chunks already stored (re-read and verified) plus the chunker's buffer,
//! the whole stream is reordered through a spill file (`tar::reorder`), and the scan runs again
//! on the canonical stream. Docker exports are canonical, so this costs nothing in the common
//! case and no temporary copy of the whole image is made for them.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::chunk;
use crate::chunker::{ChunkParams, Chunker};
use crate::digest::{Digest, SnapshotId};
use crate::error::{Error, Result};
use crate::layout;
use crate::lease;
use crate::manifest::{self, ChunkRef, Chunking, Compression, Manifest, TocEntry, Zstd};
use crate::restore;
use crate::store::{PutMode, PutOutcome, Store};
use crate::tar::{self, CanonicalKey, Entry, EntryKind, TarReader};
use crate::verified::Verified;

/// Finds secret values in bytes (implemented outside this crate, over the secrets in scope).
pub trait LeakScanner: Send + Sync + std::fmt::Debug {
    /// The longest pattern, in bytes: matches can span that much across reads.
    fn longest(&self) -> usize;
    /// Start offsets in `haystack` of the values found, with the secret's name.
    fn find(&self, haystack: &[u8]) -> Vec<(usize, String)>;
}

/// The documents a builder attaches to a snapshot (see `manifest`).
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    pub image_config: Option<Value>,
    pub environment: Option<Value>,
    pub keys: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub params: ChunkParams,
    pub zstd_level: i32,
    /// Chunks hashed, compressed and stored at once.
    pub concurrency: usize,
    /// Where a stream that must be reordered spills once it outgrows memory.
    pub spill_dir: PathBuf,
    pub meta: SnapshotMeta,
    /// Refuse to publish a stream holding any of these secrets.
    pub leak_scanner: Option<Arc<dyn LeakScanner>>,
    /// The chunks known sound in the store: a chunk found stored is reused without being read
    /// back only when it is known; otherwise it is read and checked, and rewritten if damaged.
    pub verified: Arc<Verified>,
    /// Store names that leave the root (absolute, `..`) as they are, as a hostile writer
    /// could: only for tests of the readers' own defences.
    #[cfg(feature = "testing")]
    pub unchecked_paths: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            params: ChunkParams::default(),
            zstd_level: 3,
            concurrency: default_concurrency(),
            spill_dir: std::env::temp_dir(),
            meta: SnapshotMeta::default(),
            leak_scanner: None,
            verified: Arc::new(Verified::in_memory()),
            #[cfg(feature = "testing")]
            unchecked_paths: false,
        }
    }
}

/// Two chunks in flight per core: while one waits on the store, the other has the core.
pub fn default_concurrency() -> usize {
    cores() * 2
}

/// Counters a progress display can poll while an ingest or a fetch runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the stream processed so far.
    pub bytes: AtomicU64,
    /// Bytes expected in all, 0 when unknown.
    pub total: AtomicU64,
    /// Chunks finished.
    pub chunks: AtomicU64,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub id: SnapshotId,
    /// Bytes in the (canonical) stream.
    pub bytes: u64,
    pub entries: usize,
    pub chunks: usize,
    pub unique_chunks: usize,
    /// Chunks this ingest stored (the others were already in the store).
    pub new_chunks: usize,
    pub new_raw_bytes: u64,
    pub new_stored_bytes: u64,
    /// Stored bytes of all the snapshot's distinct chunks.
    pub stored_bytes: u64,
    pub manifest_bytes: u64,
    /// Whether the input had to be put in canonical order first.
    pub reordered: bool,
    /// False when an identical snapshot was already published.
    pub published: bool,
    pub elapsed: Duration,
}

/// Ingests `input` into `store` and publishes the snapshot.
pub async fn ingest(
    store: Arc<dyn Store>,
    input: Box<dyn Read + Send>,
    options: IngestOptions,
    progress: Arc<Progress>,
) -> Result<IngestReport> {
    let started = Instant::now();
    let lease = lease::acquire_write(&store).await?;
    let result = ingest_leased(&store, input, &options, &progress, started).await;
    lease.release().await;
    result
}

async fn ingest_leased(
    store: &Arc<dyn Store>,
    input: Box<dyn Read + Send>,
    options: &IngestOptions,
    progress: &Arc<Progress>,
    started: Instant,
) -> Result<IngestReport> {
    let mut pass = run_pass(store, input, options, progress).await?;
    let mut reordered = false;
    if let ScanEnd::NotCanonical { leftover, rest, path } = pass.end {
        tracing::info!("the input is not in canonical order (at `{path}`); reordering it");
        reordered = true;
        let prefix = restore::ChunkReader::new(store.clone(), pass.chunks.iter().map(|c| c.chunk).collect());
        let whole = prefix.chain(std::io::Cursor::new(leftover)).chain(rest);
        let spill_dir = options.spill_dir.clone();
        let canonical = tokio::task::spawn_blocking(move || tar::reorder(whole, &spill_dir))
            .await
            .map_err(|e| Error::Internal(format!("the reorder thread failed: {e}")))??;
        progress.bytes.store(0, Ordering::Relaxed);
        progress.chunks.store(0, Ordering::Relaxed);
        pass = run_pass(store, Box::new(canonical), options, progress).await?;
        if let ScanEnd::NotCanonical { path, .. } = pass.end {
            return Err(Error::Internal(format!("the reordered stream is still out of order at `{path}`")));
        }
    }
    let ScanEnd::Done { toc, bytes, entries_end, leaks } = pass.end else { unreachable!("handled above") };
    publish(
        store,
        options,
        Scanned { chunks: pass.chunks, toc, bytes, entries_end, leaks, reordered },
        started,
    )
    .await
}

/// What a pass over a new stream produced, ready to be published.
pub(crate) struct Scanned {
    pub chunks: Vec<StoredChunk>,
    pub toc: Vec<TocEntry>,
    /// Bytes in the stream.
    pub bytes: u64,
    /// Where the last entry ends (the end-of-archive marker begins).
    pub entries_end: u64,
    /// Stream offsets where secret values were found, with the secrets' names.
    pub leaks: Vec<(u64, String)>,
    pub reordered: bool,
}

/// Publishes the manifest of `scanned` (after every chunk is stored), or, when the leak scan
/// found secret values, deletes the chunks this ingest added and refuses.
pub(crate) async fn publish(
    store: &Arc<dyn Store>,
    options: &IngestOptions,
    scanned: Scanned,
    started: Instant,
) -> Result<IngestReport> {
    let Scanned { chunks: stored, toc, bytes, entries_end, leaks, reordered } = scanned;
    if !leaks.is_empty() {
        // Nothing is published, and the chunks this ingest added (which hold the values) go.
        for chunk in stored.iter().filter(|c| c.new) {
            store.delete(&layout::chunk(&chunk.chunk.digest)).await?;
        }
        return Err(Error::Leak { findings: locate(&leaks, &toc) });
    }
    let chunks: Vec<ChunkRef> = stored.iter().map(|c| c.chunk).collect();
    let lines = manifest::encode_toc(&toc, entries_end)
        .map_err(|e| Error::Internal(format!("the table of contents cannot be written: {e}")))?;
    let (toc_ref, toc_stored) = store_lines(store, options, lines, toc.len()).await?;
    let lines = manifest::encode_chunk_list(&chunks);
    let (chunks_ref, list_stored) = store_lines(store, options, lines, chunks.len()).await?;
    let manifest = Manifest {
        format: manifest::FORMAT.to_owned(),
        chunking: Chunking::of(options.params),
        compression: Compression { algorithm: Zstd::Zstd, level: options.zstd_level },
        size: bytes,
        chunks,
        chunks_ref: Some(chunks_ref),
        toc,
        toc_ref: Some(toc_ref),
        image_config: options.meta.image_config.clone(),
        environment: options.meta.environment.clone(),
        keys: options.meta.keys.clone(),
    };
    manifest.check().map_err(|e| Error::Internal(format!("the new manifest fails its own checks: {e}")))?;
    let (bytes_of_manifest, id) = manifest.encode()?;
    let manifest_bytes = bytes_of_manifest.len() as u64;
    let outcome = store.put(&layout::snapshot(&id), Bytes::from(bytes_of_manifest), PutMode::Create).await?;
    let published = matches!(outcome, PutOutcome::Written { .. });
    options.verified.save();
    let unique = manifest.unique_chunks();
    let new: Vec<&StoredChunk> = {
        let mut seen = std::collections::HashSet::new();
        stored
            .iter()
            .chain(&toc_stored)
            .chain(&list_stored)
            .filter(|c| c.new && seen.insert(c.chunk.digest))
            .collect()
    };
    Ok(IngestReport {
        id,
        bytes,
        entries: manifest.toc.len(),
        chunks: manifest.chunks.len(),
        unique_chunks: unique.len(),
        new_chunks: new.len(),
        new_raw_bytes: new.iter().map(|c| c.chunk.size).sum(),
        new_stored_bytes: new.iter().map(|c| c.chunk.stored_size).sum::<u64>()
            + if published { manifest_bytes } else { 0 },
        stored_bytes: unique.iter().map(|c| c.stored_size).sum::<u64>() + manifest_bytes,
        manifest_bytes,
        reordered,
        published,
        elapsed: started.elapsed(),
    })
}

/// Stores one of v2's lists (`lines` of `entries` lines) in chunks; where it is, and its
/// chunks.
async fn store_lines(
    store: &Arc<dyn Store>,
    options: &IngestOptions,
    lines: Vec<u8>,
    entries: usize,
) -> Result<(manifest::StreamRef, Vec<StoredChunk>)> {
    let size = lines.len() as u64;
    let mut chunker = Chunker::new(manifest::LIST_CHUNKING);
    let mut pieces = Vec::new();
    chunker.push(&lines, &mut pieces);
    chunker.finish(&mut pieces);
    let (tx, rx) = mpsc::channel::<Piece>(pieces.len().max(1));
    for piece in pieces {
        tx.try_send(Piece::Fresh(piece)).map_err(|_| Error::Internal("the list's channel is full".into()))?;
    }
    drop(tx);
    let stored = store_pieces(store, rx, options, &Arc::new(Progress::default())).await?;
    let stream = manifest::StreamRef {
        chunking: Chunking::of(manifest::LIST_CHUNKING),
        chunks: stored.iter().map(|c| c.chunk).collect(),
        entries: entries as u64,
        size,
    };
    Ok((stream, stored))
}

/// A chunk after the store has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredChunk {
    pub chunk: ChunkRef,
    /// Whether this ingest wrote it.
    pub new: bool,
}

/// One chunk of a new stream, in order: new bytes to store, or a chunk of the parent the
/// stream shares whole (`splice`), which the store already has.
#[derive(Debug)]
pub(crate) enum Piece {
    Fresh(Bytes),
    Reused(ChunkRef),
}

struct Pass {
    end: ScanEnd,
    chunks: Vec<StoredChunk>,
}

/// How a scan of the stream ended.
enum ScanEnd {
    Done {
        toc: Vec<TocEntry>,
        bytes: u64,
        entries_end: u64,
        /// Stream offsets where secret values were found, with the secrets' names.
        leaks: Vec<(u64, String)>,
    },
    /// An entry came out of canonical order. Everything read so far went to the chunker:
    /// into chunks already sent, or into `leftover`; `rest` is the unread input.
    NotCanonical { leftover: Vec<u8>, rest: Box<dyn Read + Send>, path: String },
}

async fn run_pass(
    store: &Arc<dyn Store>,
    input: Box<dyn Read + Send>,
    options: &IngestOptions,
    progress: &Arc<Progress>,
) -> Result<Pass> {
    let (tx, rx) = mpsc::channel::<Piece>(options.concurrency.max(2));
    let params = options.params;
    let scan_progress = progress.clone();
    let scanner = options.leak_scanner.clone();
    #[cfg(feature = "testing")]
    let check_paths = !options.unchecked_paths;
    #[cfg(not(feature = "testing"))]
    let check_paths = true;
    let scan =
        tokio::task::spawn_blocking(move || scan(input, params, tx, &scan_progress, scanner, check_paths));
    let stored = store_pieces(store, rx, options, progress).await;
    let scanned = scan.await.map_err(|e| Error::Internal(format!("the scan thread failed: {e}")))?;
    // A store failure is the root cause when both fail: the scan then only saw the channel close.
    let chunks = stored?;
    let end = scanned?;
    Ok(Pass { end, chunks })
}

/// Stores the pieces coming down `rx` (hashing, compressing and writing the fresh ones,
/// checking the reused ones are still there), several at once, and returns them in order.
pub(crate) async fn store_pieces(
    store: &Arc<dyn Store>,
    mut rx: mpsc::Receiver<Piece>,
    options: &IngestOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<StoredChunk>> {
    let incoming = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let level = options.zstd_level;
    let verified = &options.verified;
    // CPU work (hash, zstd) runs on at most two threads per core however many chunks are in
    // flight for the store's sake (remote stores want many): measured, two per core keeps the
    // cores busy while the scan thread waits; more only preempt each other.
    let cpu = Arc::new(tokio::sync::Semaphore::new(cores() * 2));
    // Unordered, so one slow chunk never idles the others; the index puts results in order.
    incoming
        .enumerate()
        .map(|(index, piece)| {
            let store = store.clone();
            let progress = progress.clone();
            let cpu = cpu.clone();
            async move {
                let stored = match piece {
                    Piece::Fresh(raw) => store_chunk(&store, raw, level, &cpu, verified).await,
                    Piece::Reused(chunk) => check_reused(&store, chunk, &cpu, verified).await,
                };
                progress.chunks.fetch_add(1, Ordering::Relaxed);
                stored.map(|chunk| (index, chunk))
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await
        .map(|mut indexed| {
            indexed.sort_unstable_by_key(|(index, _)| *index);
            indexed.into_iter().map(|(_, chunk)| chunk).collect::<Vec<_>>()
        })
}

/// A parent's chunk the new snapshot shares: it must still be in the store, sound (known, or
/// read back and checked). A damaged one fails the splice, and the build stores everything
/// again instead, from the engine's bytes.
async fn check_reused(
    store: &Arc<dyn Store>,
    chunk: ChunkRef,
    cpu: &tokio::sync::Semaphore,
    verified: &Verified,
) -> Result<StoredChunk> {
    let missing = || {
        Error::Internal(format!(
            "chunk {} of the parent snapshot is missing from {}",
            chunk.digest,
            store.location()
        ))
    };
    let meta = store.head(&layout::chunk(&chunk.digest)).await?.ok_or_else(missing)?;
    if meta.size != chunk.stored_size {
        return Err(Error::Internal(format!(
            "chunk {} of the parent snapshot has {} stored bytes in {}, not the {} its manifest says",
            chunk.digest,
            meta.size,
            store.location(),
            chunk.stored_size
        )));
    }
    if !verified.knows(&chunk.digest, &meta.etag) {
        let etag = read_back(store, &chunk.digest, chunk.size, cpu).await?.ok_or_else(|| {
            Error::Internal(format!(
                "chunk {} of the parent snapshot is damaged in {}",
                chunk.digest,
                store.location()
            ))
        })?;
        verified.note(chunk.digest, &etag);
    }
    Ok(StoredChunk { chunk, new: false })
}

/// Reads chunk `digest` back from the store itself (past any cache) and checks it: its etag
/// when it is sound, `None` when it is damaged or gone.
async fn read_back(
    store: &Arc<dyn Store>,
    digest: &Digest,
    size: u64,
    cpu: &tokio::sync::Semaphore,
) -> Result<Option<String>> {
    let got = match store.get_uncached(&layout::chunk(digest), manifest::zstd_bound(size)).await {
        Ok(got) => got,
        Err(e) if e.is_not_found() || e.is_damage() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let digest = *digest;
    let sound = on_a_core(cpu, "checking", move || chunk::decode(&got.bytes, &digest, size).is_ok()).await?;
    Ok(sound.then_some(got.etag))
}

/// Runs CPU-bound `work` on a blocking thread once `cpu` grants a core.
async fn on_a_core<T: Send + 'static>(
    cpu: &tokio::sync::Semaphore,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let _permit = cpu.acquire().await.map_err(|_| Error::Internal("the CPU pool closed".into()))?;
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("a {what} task failed: {e}")))
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Hashes a chunk, and compresses and stores it unless the store already has it, sound: a
/// stored copy is reused when it is known sound or reads back sound, and is rewritten from
/// `raw` otherwise (which repairs the store).
async fn store_chunk(
    store: &Arc<dyn Store>,
    raw: Bytes,
    level: i32,
    cpu: &tokio::sync::Semaphore,
    verified: &Verified,
) -> Result<StoredChunk> {
    let size = raw.len() as u64;
    let (digest, raw) = on_a_core(cpu, "hashing", move || (Digest::of(&raw), raw)).await?;
    let path = layout::chunk(&digest);
    let mut mode = PutMode::Create;
    match store.head(&path).await {
        Ok(Some(meta)) => {
            let plausible = meta.size > 0 && meta.size <= manifest::zstd_bound(size);
            let reused = StoredChunk { chunk: ChunkRef { digest, size, stored_size: meta.size }, new: false };
            if plausible && verified.knows(&digest, &meta.etag) {
                return Ok(reused);
            }
            if plausible && let Some(etag) = read_back(store, &digest, size, cpu).await? {
                verified.note(digest, &etag);
                return Ok(reused);
            }
            tracing::warn!("chunk {digest} in {} is damaged; rewriting it from the input", store.location());
            mode = PutMode::Overwrite;
        }
        Ok(None) => {}
        // Something that is not a file sits in its place: replace it.
        Err(e) if e.is_damage() => {
            tracing::warn!("{e}; rewriting chunk {digest} from the input");
            mode = PutMode::Overwrite;
        }
        Err(e) => return Err(e.into()),
    }
    let stored = on_a_core(cpu, "compression", move || chunk::compress(&raw, level))
        .await?
        .map_err(Error::io(format!("cannot compress chunk {digest}")))?;
    let stored_size = stored.len() as u64;
    match store.put(&path, Bytes::from(stored), mode).await? {
        PutOutcome::Written { etag } => {
            verified.note(digest, &etag);
            Ok(StoredChunk { chunk: ChunkRef { digest, size, stored_size }, new: true })
        }
        PutOutcome::AlreadyExists => {
            // Another writer stored it in the meantime; reference its object.
            let meta = store.head(&path).await?.ok_or_else(|| {
                Error::Internal(format!(
                    "chunk {digest} was reported present in {} but is gone",
                    store.location()
                ))
            })?;
            Ok(StoredChunk { chunk: ChunkRef { digest, size, stored_size: meta.size }, new: false })
        }
    }
}

/// Passes every byte read on to the chunker (and the leak scan), and sends completed chunks
/// down the channel.
struct Recorder {
    inner: Box<dyn Read + Send>,
    chunker: Chunker,
    tx: mpsc::Sender<Piece>,
    ready: Vec<Bytes>,
    progress: Arc<Progress>,
    leaks: Option<LeakWatch>,
}

/// The leak scan's view of the stream: the last bytes seen (a value may span reads) and what
/// was found.
#[derive(Debug)]
pub(crate) struct LeakWatch {
    scanner: Arc<dyn LeakScanner>,
    /// The last `longest - 1` bytes, starting at stream offset `tail_start`.
    tail: Vec<u8>,
    tail_start: u64,
    /// Matches starting before this offset were already reported.
    reported_until: u64,
    hits: Vec<(u64, String)>,
}

impl LeakWatch {
    pub(crate) fn new(scanner: Arc<dyn LeakScanner>) -> Self {
        Self { scanner, tail: Vec::new(), tail_start: 0, reported_until: 0, hits: Vec::new() }
    }

    /// Scans `bytes`, found at stream offset `offset`: a value may span it and the bytes seen
    /// just before it, when they were contiguous; after a gap the scan starts afresh.
    pub(crate) fn observe_at(&mut self, offset: u64, bytes: &[u8]) {
        if offset != self.tail_start + self.tail.len() as u64 {
            self.tail.clear();
            self.tail_start = offset;
        }
        self.observe(bytes);
    }

    pub(crate) fn into_hits(self) -> Vec<(u64, String)> {
        self.hits
    }

    fn observe(&mut self, chunk: &[u8]) {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        for (start, name) in self.scanner.find(&window) {
            let at = self.tail_start + start as u64;
            if at >= self.reported_until {
                self.hits.push((at, name));
                self.reported_until = at + 1;
            }
        }
        let keep = self.scanner.longest().saturating_sub(1).min(window.len());
        self.tail_start += (window.len() - keep) as u64;
        self.tail = window.split_off(window.len() - keep);
    }
}

/// Each leak as (secret, path of the entry holding it), once per pair.
fn locate(leaks: &[(u64, String)], toc: &[TocEntry]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (offset, name) in leaks {
        let index = toc.partition_point(|e| e.offset <= *offset);
        let path = index
            .checked_sub(1)
            .map_or_else(|| "(the end of the stream)".to_owned(), |i| toc[i].path.clone());
        if !out.iter().any(|(n, p)| n == name && *p == path) {
            out.push((name.clone(), path));
        }
    }
    out
}

impl Recorder {
    fn send_ready(&mut self) -> std::io::Result<()> {
        for chunk in self.ready.drain(..) {
            self.tx
                .blocking_send(Piece::Fresh(chunk))
                .map_err(|_| std::io::Error::other("the chunk store stopped accepting chunks"))?;
        }
        Ok(())
    }
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(leaks) = &mut self.leaks {
            leaks.observe(&buf[..n]);
        }
        self.chunker.push(&buf[..n], &mut self.ready);
        self.send_ready()?;
        Ok(n)
    }
}

fn scan(
    input: Box<dyn Read + Send>,
    params: ChunkParams,
    tx: mpsc::Sender<Piece>,
    progress: &Arc<Progress>,
    scanner: Option<Arc<dyn LeakScanner>>,
    check_paths: bool,
) -> Result<ScanEnd> {
    // No BufReader: data is read straight into the tar reader's buffer, and the extra copy of
    // every byte costs more than the small reads of the 512-byte headers (measured).
    let leaks = scanner.map(LeakWatch::new);
    let recorder = Recorder {
        inner: input,
        chunker: Chunker::new(params),
        tx,
        ready: Vec::new(),
        progress: progress.clone(),
        leaks,
    };
    let mut tar = TarReader::new(recorder);
    let mut toc = Vec::new();
    let mut previous: Option<CanonicalKey> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut entries_end = 0;
    while let Some(entry) = tar.next_entry()? {
        let key = tar::canonical_key(&entry.path);
        if previous.as_ref().is_some_and(|p| *p >= key) {
            let recorder = tar.into_inner();
            return Ok(ScanEnd::NotCanonical {
                leftover: recorder.chunker.pending().to_vec(),
                rest: recorder.inner,
                path: String::from_utf8_lossy(&entry.path).into_owned(),
            });
        }
        if check_paths {
            // A name that leaves the root is refused here, not first when someone fetches it.
            crate::extract::check_path(&entry.path, "the path")?;
            if let (EntryKind::Hardlink, Some(target)) = (entry.kind, &entry.link) {
                crate::extract::check_path(target, "the hard link's target")?;
            }
        }
        let hash = content_hash(&entry, &mut tar, &mut buf)?;
        entries_end = entry.data_offset + entry.size + tar::padding(entry.size) as u64;
        toc.push(toc_entry(&entry, hash));
        previous = Some(key);
    }
    // A stream cut short would otherwise be a smaller snapshot of what was read.
    if !tar.saw_end_marker() {
        return Err(tar::TarError::NoEndMarker { offset: tar.position() }.into());
    }
    if toc.is_empty() {
        return Err(tar::TarError::Empty.into());
    }
    tar.drain()?;
    let bytes = tar.position();
    let mut recorder = tar.into_inner();
    let chunker = std::mem::replace(&mut recorder.chunker, Chunker::new(params));
    chunker.finish(&mut recorder.ready);
    recorder.send_ready().map_err(Error::io("cannot hand the last chunks to the store"))?;
    let leaks = recorder.leaks.take().map(LeakWatch::into_hits).unwrap_or_default();
    Ok(ScanEnd::Done { toc, bytes, entries_end, leaks })
}

/// The table of contents of a tar stream, storing nothing: for comparing a stream with a
/// stored snapshot (the builder's idempotency check). Runs on the calling thread.
pub fn table_of_contents(input: &mut dyn Read) -> Result<Vec<TocEntry>> {
    let mut tar = TarReader::new(input);
    let mut toc = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(entry) = tar.next_entry()? {
        let hash = content_hash(&entry, &mut tar, &mut buf)?;
        toc.push(toc_entry(&entry, hash));
    }
    tar.drain()?;
    Ok(toc)
}

/// Reads a regular file's data and returns its content hash for the table of contents.
pub(crate) fn content_hash<R: Read>(
    entry: &Entry,
    tar: &mut TarReader<R>,
    buf: &mut [u8],
) -> Result<Option<String>> {
    if entry.kind != EntryKind::File {
        return Ok(None);
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    loop {
        let n = tar.read_data(buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(format_content_hash(&hasher)))
}

/// A file's content hash as the table of contents writes it.
pub(crate) fn format_content_hash(hasher: &xxhash_rust::xxh3::Xxh3) -> String {
    format!("xxh3:{:032x}", hasher.digest128())
}

/// A name as text, with its exact bytes in base64 when they are not UTF-8.
fn text_or_b64(bytes: Vec<u8>) -> (String, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(b64))
        }
    }
}

pub(crate) fn toc_entry(entry: &Entry, hash: Option<String>) -> TocEntry {
    let (path, path_b64) = text_or_b64(tar::display_path(&entry.path));
    let (link, link_b64) = match (&entry.link, entry.kind) {
        // Hard link targets name archive members, so they are shown like paths.
        (Some(target), EntryKind::Hardlink) => {
            let (t, b) = text_or_b64(tar::display_path(target));
            (Some(t), b)
        }
        (Some(target), _) => {
            let (t, b) = text_or_b64(target.clone());
            (Some(t), b)
        }
        (None, _) => (None, None),
    };
    let mut xattrs: Vec<String> =
        entry.xattrs.iter().map(|(name, _)| String::from_utf8_lossy(name).into_owned()).collect();
    xattrs.sort();
    TocEntry {
        path,
        path_b64,
        kind: entry.kind,
        offset: entry.offset,
        size: if entry.kind == EntryKind::File { entry.size } else { 0 },
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        link,
        link_b64,
        hash,
        dev: matches!(entry.kind, EntryKind::Char | EntryKind::Block)
            .then_some([entry.dev_major, entry.dev_minor]),
        xattrs,
    }
}
