//! A snapshot made from its parent and the paths that changed: the incremental build's
//! export, which costs what changed instead of the whole file system.
//!
//! An incremental install changes a few paths of a root file system the store already holds
//! (the parent's). Streaming the whole file system out of the engine again costs seconds per
//! GB whatever changed; here the new snapshot is built from the parent's stream and the changed
//! paths alone.
//!
//! **The new stream** is defined exactly: the parent's entries in canonical order with each
//! [`Part`] applied at its place (a subtree replaced, one entry replaced, or a path removed),
//! the parts' entries renamed to their place in the root (headers from
//! [`crate::tar::encode_header`]), the parent's own bytes for every other entry, and the
//! parent's end-of-archive trailer. The snapshot is exactly what [`crate::ingest`] makes of
//! that stream: the same chunks, table of contents and id (the tests compare them). What
//! differs is how much of it is read:
//!
//! - A content-defined cut depends only on where its chunk starts and on the bytes up to the
//!   cut. So once the new stream's chunker cuts where the parent also cut, and the bytes from
//!   there on are the parent's, every following parent chunk is a chunk of the new stream too,
//!   up to the next change: those are referenced without being read.
//! - Only the chunks around each change are fetched (verified) and cut again, until a cut lands
//!   on one of the parent's boundaries, typically within a chunk or two. The parent's last
//!   chunk was cut by the end of its stream, so it is reused only where the new stream ends the
//!   same way.
//! - The table of contents is the parent's, shifted, plus the new entries'.
//! - The leak scan sees every new byte. The parent's bytes were scanned when it was made, so
//!   callers splice only when the secrets in scope are ones the parent was scanned for.
//!
//! A parent hard link whose target changed, parts out of order or outside their path, and an
//! archive whose names do not start with its root are refused ([`Error::NotSpliceable`]); the
//! caller then exports the whole file system instead.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::chunker::{ChunkParams, Chunker};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestOptions, IngestReport, LeakWatch, Piece, Progress, Scanned};
use crate::lease;
use crate::manifest::{Manifest, TocEntry};
use crate::restore;
use crate::store::Store;
use crate::tar::{self, CanonicalKey, Entry, EntryKind, TarReader};

/// How much of a part's archive replaces the parent's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The path and everything under it: the archive's entries replace all of the parent's.
    Subtree,
    /// The path's own entry (for a directory, its header alone); the parent's entries under it
    /// stay, unless the new entry is not a directory.
    Entry,
}

/// Opens a part's archive: a tar stream of the path's subtree whose names start with the
/// path's last component (the layout of Docker's archive endpoint), or `None` when the path no
/// longer exists. Called on a blocking thread.
pub type Opener = Box<dyn FnOnce() -> std::io::Result<Option<Box<dyn Read + Send>>> + Send>;

/// One changed path.
pub struct Part {
    /// As the table of contents names it: `workspace/node_modules/zod`.
    pub path: String,
    pub take: Take,
    pub open: Opener,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("path", &self.path).field("take", &self.take).finish_non_exhaustive()
    }
}

/// Ingests the parent's stream with `parts` applied (see the module docs) and publishes the
/// snapshot. `parts` must be in canonical order of their paths, none under a subtree part.
pub async fn ingest_onto(
    store: Arc<dyn Store>,
    parent: Arc<Manifest>,
    parts: Vec<Part>,
    options: IngestOptions,
    progress: Arc<Progress>,
) -> Result<IngestReport> {
    let started = Instant::now();
    let c = parent.chunking;
    if ChunkParams::new(c.min, c.avg, c.max).ok() != Some(options.params) {
        return Err(Error::NotSpliceable("the parent was cut with other chunk sizes".into()));
    }
    let lease = lease::acquire_write(&store).await?;
    let result = async {
        let (tx, rx) = mpsc::channel::<Piece>(options.concurrency.max(2));
        let source = Source::new(store.clone(), parent)?;
        progress.total.store(source.manifest.size, Ordering::Relaxed);
        let splicer = Splicer::new(options.params, tx, progress.clone());
        let leaks = options.leak_scanner.clone().map(LeakWatch::new);
        let merge = tokio::task::spawn_blocking(move || Merge::new(source, splicer, leaks).run(parts));
        let stored = ingest::store_pieces(&store, rx, &options, &progress).await;
        let merged = merge.await.map_err(|e| Error::Internal(format!("the splice thread failed: {e}")))?;
        // A store failure is the root cause when both fail: the merge then only saw the channel close.
        let chunks = stored?;
        let Merged { toc, bytes, entries_end, leaks } = merged?;
        let scanned = Scanned { chunks, toc, bytes, entries_end, leaks, reordered: false };
        ingest::publish(&store, &options, scanned, started).await
    }
    .await;
    lease.release().await;
    result
}

/// The parent: its manifest, the sort keys and extents of its entries, and its chunks, read on
/// demand (verified) from the store.
struct Source {
    store: Arc<dyn Store>,
    manifest: Arc<Manifest>,
    handle: tokio::runtime::Handle,
    keys: Vec<CanonicalKey>,
    /// Where each entry's bytes end (the next entry's start; for the last, its padded data's end).
    ends: Vec<u64>,
    /// Where each chunk starts, and the stream's size last.
    starts: Vec<u64>,
    cached: Option<(usize, Bytes)>,
}

impl Source {
    /// Must be called inside the runtime (chunks are fetched through its handle).
    fn new(store: Arc<dyn Store>, manifest: Arc<Manifest>) -> Result<Self> {
        let mut keys = Vec::with_capacity(manifest.toc.len());
        for (i, entry) in manifest.toc.iter().enumerate() {
            let key = tar::canonical_key(&toc_path(entry)?);
            let previous = i.checked_sub(1).map(|p| (&keys[p], manifest.toc[p].offset));
            if let Some((previous_key, previous_offset)) = previous
                && (*previous_key >= key || previous_offset >= entry.offset)
            {
                return Err(Error::NotSpliceable(format!(
                    "the parent's table of contents is not in canonical order at `{}`",
                    entry.path
                )));
            }
            keys.push(key);
        }
        let mut starts = Vec::with_capacity(manifest.chunks.len() + 1);
        let mut at = 0u64;
        for chunk in &manifest.chunks {
            starts.push(at);
            at += chunk.size;
        }
        starts.push(at);
        Ok(Self {
            store,
            manifest,
            handle: tokio::runtime::Handle::current(),
            keys,
            ends: Vec::new(),
            starts,
            cached: None,
        })
    }

    /// Fills `ends`, parsing the last entry's header for where the entries end.
    fn measure(&mut self) -> Result<()> {
        let manifest = self.manifest.clone();
        let mut ends: Vec<u64> = manifest.toc.iter().skip(1).map(|e| e.offset).collect();
        if let Some(last) = manifest.toc.last() {
            let mut reader = TarReader::new(SourceReader { source: self, at: last.offset });
            let entry = reader.next_entry()?.ok_or_else(|| {
                Error::NotSpliceable(format!(
                    "the parent's stream has no entry where `{}` should be",
                    last.path
                ))
            })?;
            let data_end = last.offset + entry.data_offset + entry.size;
            ends.push(data_end + tar::padding(entry.size) as u64);
        }
        self.ends = ends;
        Ok(())
    }

    fn entries_end(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    fn chunk_count(&self) -> usize {
        self.starts.len() - 1
    }

    /// The chunk holding stream offset `at`.
    fn chunk_at(&self, at: u64) -> usize {
        self.starts.partition_point(|&s| s <= at) - 1
    }

    fn chunk(&mut self, index: usize) -> Result<Bytes> {
        if let Some((cached, bytes)) = &self.cached
            && *cached == index
        {
            return Ok(bytes.clone());
        }
        let chunk = self.manifest.chunks[index];
        let bytes = self.handle.block_on(restore::fetch_chunk(&*self.store, &chunk))?;
        self.cached = Some((index, bytes.clone()));
        Ok(bytes)
    }
}

/// The parent's stream from an offset, for parsing a header in it.
struct SourceReader<'a> {
    source: &'a mut Source,
    at: u64,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.source.manifest.size {
            return Ok(0);
        }
        let index = self.source.chunk_at(self.at);
        let bytes = self.source.chunk(index).map_err(std::io::Error::other)?;
        let from = usize::try_from(self.at - self.source.starts[index]).map_err(std::io::Error::other)?;
        let n = (bytes.len() - from).min(buf.len());
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.at += n as u64;
        Ok(n)
    }
}

/// The exact name bytes of a table of contents entry.
fn toc_path(entry: &TocEntry) -> Result<Vec<u8>> {
    match &entry.path_b64 {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
            Error::NotSpliceable(format!("the parent's entry `{}` has an invalid base64 name", entry.path))
        }),
        None => Ok(entry.path.as_bytes().to_vec()),
    }
}

/// The chunker of the new stream, fed new bytes and ranges of the parent's, which hands out
/// fresh chunks and reuses the parent's wherever the two streams agree (see the module docs).
struct Splicer {
    params: ChunkParams,
    chunker: Chunker,
    /// Bytes of the new stream handed to the chunker or reused.
    pos: u64,
    /// Where the chunker's pending bytes start: the end of the last chunk handed out.
    cut: u64,
    tx: mpsc::Sender<Piece>,
    ready: Vec<Bytes>,
    progress: Arc<Progress>,
}

impl Splicer {
    fn new(params: ChunkParams, tx: mpsc::Sender<Piece>, progress: Arc<Progress>) -> Self {
        Self { params, chunker: Chunker::new(params), pos: 0, cut: 0, tx, ready: Vec::new(), progress }
    }

    fn send(&self, piece: Piece) -> Result<()> {
        self.tx
            .blocking_send(piece)
            .map_err(|_| Error::Internal("the chunk store stopped accepting chunks".into()))
    }

    /// New bytes.
    fn fresh(&mut self, bytes: &[u8]) -> Result<()> {
        self.chunker.push(bytes, &mut self.ready);
        self.pos += bytes.len() as u64;
        self.progress.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        for chunk in std::mem::take(&mut self.ready) {
            self.cut += chunk.len() as u64;
            self.send(Piece::Fresh(chunk))?;
        }
        Ok(())
    }

    /// The parent's bytes `[from, to)`.
    fn parent(&mut self, source: &mut Source, mut from: u64, to: u64) -> Result<()> {
        // Where this run of parent bytes begins in each stream: a cut at new offset `q` at or
        // after `run.0` falls on parent offset `run.1 + (q - run.0)`.
        let mut run = (self.pos, from);
        while from < to {
            if self.cut == self.pos
                && let Ok(index) = source.starts.binary_search(&from)
                && index < source.chunk_count()
            {
                let end = source.starts[index + 1];
                let last = index + 1 == source.chunk_count();
                if end <= to && (!last || to == source.manifest.size) {
                    let chunk = source.manifest.chunks[index];
                    self.send(Piece::Reused(chunk))?;
                    self.pos += chunk.size;
                    self.cut = self.pos;
                    self.progress.bytes.fetch_add(chunk.size, Ordering::Relaxed);
                    from = end;
                    run = (self.pos, from);
                    continue;
                }
            }
            let index = source.chunk_at(from);
            let bytes = source.chunk(index)?;
            let base = source.starts[index];
            let end = to.min(source.starts[index + 1]);
            let piece = bytes
                .slice(usize::try_from(from - base).unwrap_or(0)..usize::try_from(end - base).unwrap_or(0));
            self.chunker.push(&piece, &mut self.ready);
            self.pos += piece.len() as u64;
            self.progress.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
            let mut resync = None;
            for chunk in std::mem::take(&mut self.ready) {
                self.cut += chunk.len() as u64;
                self.send(Piece::Fresh(chunk))?;
                if self.cut >= run.0 {
                    let parent_offset = run.1 + (self.cut - run.0);
                    if parent_offset < to && source.starts.binary_search(&parent_offset).is_ok() {
                        resync = Some(parent_offset);
                        // The chunks after this cut are the parent's: reused below, not sent.
                        break;
                    }
                }
            }
            match resync {
                Some(parent_offset) => {
                    self.chunker = Chunker::new(self.params);
                    let rewound = self.pos - self.cut;
                    self.progress.bytes.fetch_sub(rewound, Ordering::Relaxed);
                    self.pos = self.cut;
                    from = parent_offset;
                    run = (self.pos, from);
                }
                None => from = end,
            }
        }
        Ok(())
    }

    /// Cuts what is left; returns the stream's length.
    fn finish(mut self) -> Result<u64> {
        let chunker = std::mem::replace(&mut self.chunker, Chunker::new(self.params));
        chunker.finish(&mut self.ready);
        for chunk in std::mem::take(&mut self.ready) {
            self.send(Piece::Fresh(chunk))?;
        }
        Ok(self.pos)
    }
}

/// The new stream's table of contents, length, and secret values found in its new bytes.
struct Merged {
    toc: Vec<TocEntry>,
    bytes: u64,
    entries_end: u64,
    leaks: Vec<(u64, String)>,
}

/// Walks the parent's entries and the parts together, in canonical order.
struct Merge {
    source: Source,
    splicer: Splicer,
    leaks: Option<LeakWatch>,
    /// The next parent entry not yet kept or dropped.
    next: usize,
    /// Parent bytes kept and not yet handed to the splicer.
    run: Option<(u64, u64)>,
    /// Length of the new stream so far (as the table of contents counts it).
    out: u64,
    toc: Vec<TocEntry>,
    /// Paths the parts replaced or removed, for the hard-link check.
    touched: HashSet<CanonicalKey>,
    buf: Vec<u8>,
}

/// Whether `key` names a path strictly under `root`.
fn is_under(key: &[u8], root: &[u8]) -> bool {
    root.is_empty() && !key.is_empty()
        || key.len() > root.len() && key.starts_with(root) && key[root.len()] == 0
}

impl Merge {
    fn new(source: Source, splicer: Splicer, leaks: Option<LeakWatch>) -> Self {
        Self {
            source,
            splicer,
            leaks,
            next: 0,
            run: None,
            out: 0,
            toc: Vec::new(),
            touched: HashSet::new(),
            buf: vec![0; 256 * 1024],
        }
    }

    fn run(mut self, parts: Vec<Part>) -> Result<Merged> {
        self.source.measure()?;
        let mut previous: Option<(CanonicalKey, Take)> = None;
        for part in parts {
            let key = tar::canonical_key(part.path.as_bytes());
            let misplaced = previous.as_ref().is_some_and(|(before, take)| {
                *before >= key || *take == Take::Subtree && is_under(&key, before)
            });
            if key.is_empty() || misplaced {
                return Err(Error::NotSpliceable(format!(
                    "the changed path `{}` is out of order or inside another",
                    part.path
                )));
            }
            self.keep_before(&key)?;
            let archive =
                (part.open)().map_err(Error::io(format!("cannot read the changed path `/{}`", part.path)))?;
            self.drop_entry(&key);
            match (archive, part.take) {
                (None, _) => self.drop_under(&key),
                (Some(archive), Take::Subtree) => {
                    self.drop_under(&key);
                    self.put_archive(&part.path, &key, archive, true)?;
                }
                (Some(archive), Take::Entry) => {
                    if self.put_archive(&part.path, &key, archive, false)? != EntryKind::Directory {
                        // A directory replaced by anything else takes its contents with it.
                        self.drop_under(&key);
                    }
                }
            }
            previous = Some((key, part.take));
        }
        self.keep_before(&[])?;
        let entries_end = self.out;
        let trailer = (self.source.entries_end(), self.source.manifest.size);
        self.keep_range(trailer.0, trailer.1)?;
        self.out += trailer.1 - trailer.0;
        self.flush()?;
        self.check_hard_links()?;
        let length = self.splicer.finish()?;
        if length != self.out {
            return Err(Error::Internal(format!(
                "the spliced stream has {length} bytes where its table of contents counts {}",
                self.out
            )));
        }
        let leaks = self.leaks.map(LeakWatch::into_hits).unwrap_or_default();
        Ok(Merged { toc: self.toc, bytes: self.out, entries_end, leaks })
    }

    /// Keeps the parent entries that sort before `key` (all of them for an empty key).
    fn keep_before(&mut self, key: &[u8]) -> Result<()> {
        while self.next < self.source.keys.len()
            && (key.is_empty() || self.source.keys[self.next].as_slice() < key)
        {
            let index = self.next;
            let entry = &self.source.manifest.toc[index];
            let (from, to) = (entry.offset, self.source.ends[index]);
            let mut kept = entry.clone();
            kept.offset = self.out;
            self.toc.push(kept);
            self.out += to - from;
            self.keep_range(from, to)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Adds parent bytes to the kept run, handing the run to the splicer first when there is
    /// a gap.
    fn keep_range(&mut self, from: u64, to: u64) -> Result<()> {
        match &mut self.run {
            Some((_, end)) if *end == from => *end = to,
            _ => {
                self.flush()?;
                self.run = Some((from, to));
            }
        }
        Ok(())
    }

    /// Drops the parent entry at `key`, if it is next.
    fn drop_entry(&mut self, key: &[u8]) {
        if self.source.keys.get(self.next).is_some_and(|k| k.as_slice() == key) {
            self.touched.insert(key.to_vec());
            self.next += 1;
        }
    }

    /// Drops the parent entries under `key`, which are next.
    fn drop_under(&mut self, key: &[u8]) {
        while let Some(next) = self.source.keys.get(self.next).filter(|k| is_under(k, key)) {
            self.touched.insert(next.clone());
            self.next += 1;
        }
    }

    /// Hands the kept run to the splicer.
    fn flush(&mut self) -> Result<()> {
        if let Some((from, to)) = self.run.take() {
            self.splicer.parent(&mut self.source, from, to)?;
        }
        Ok(())
    }

    fn fresh(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(leaks) = &mut self.leaks {
            leaks.observe_at(self.out, bytes);
        }
        self.out += bytes.len() as u64;
        self.splicer.fresh(bytes)
    }

    /// Writes the archive's entries (all, or the first) at `root`; returns the first's kind.
    fn put_archive(
        &mut self,
        root: &str,
        key: &[u8],
        archive: Box<dyn Read + Send>,
        all: bool,
    ) -> Result<EntryKind> {
        self.flush()?;
        let base = root.rsplit('/').next().unwrap_or(root).as_bytes();
        let mut tar = TarReader::new(archive);
        let mut first = None;
        let mut previous: Option<CanonicalKey> = None;
        while let Some(mut entry) = tar.next_entry()? {
            entry.path = rebase(&entry.path, base, root)?;
            if entry.kind == EntryKind::Hardlink
                && let Some(target) = &entry.link
            {
                entry.link = Some(rebase(target, base, root)?);
            }
            let entry_key = tar::canonical_key(&entry.path);
            let in_place = match &previous {
                None => entry_key == key,
                Some(before) => is_under(&entry_key, key) && entry_key > *before,
            };
            if !in_place {
                return Err(Error::NotSpliceable(format!(
                    "the archive of `/{root}` has `{}` out of place",
                    String::from_utf8_lossy(&entry.path)
                )));
            }
            self.touched.insert(entry_key.clone());
            previous = Some(entry_key);
            first.get_or_insert(entry.kind);
            self.put_entry(entry, &mut tar)?;
            if !all {
                break;
            }
        }
        // A whole subtree must be whole: an archive cut short would drop its last entries.
        if all && !tar.saw_end_marker() {
            return Err(Error::NotSpliceable(format!("the archive of `/{root}` was cut short")));
        }
        first.ok_or_else(|| Error::NotSpliceable(format!("the archive of `/{root}` is empty")))
    }

    fn put_entry(&mut self, mut entry: Entry, tar: &mut TarReader<Box<dyn Read + Send>>) -> Result<()> {
        entry.offset = self.out;
        let header = tar::encode_header(&entry);
        self.fresh(&header)?;
        let mut hash = None;
        if entry.kind == EntryKind::File {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut buf = std::mem::take(&mut self.buf);
            let copied = loop {
                match tar.read_data(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        if let Err(e) = self.fresh(&buf[..n]) {
                            break Err(e);
                        }
                    }
                    Err(e) => break Err(Error::Tar(e)),
                }
            };
            self.buf = buf;
            copied?;
            self.fresh(&vec![0; tar::padding(entry.size)])?;
            hash = Some(ingest::format_content_hash(&hasher));
        }
        self.toc.push(ingest::toc_entry(&entry, hash));
        Ok(())
    }

    /// A kept hard link whose target a part replaced or removed would now name other bytes
    /// (or nothing): such changes are not spliced.
    fn check_hard_links(&self) -> Result<()> {
        for entry in &self.toc {
            if entry.kind == EntryKind::Hardlink
                && let Some(target) = &entry.link
                && self.touched.contains(&tar::canonical_key(target.as_bytes()))
                && !self.touched.contains(&tar::canonical_key(entry.path.as_bytes()))
            {
                return Err(Error::NotSpliceable(format!(
                    "`/{}` is a hard link to `/{target}`, which changed",
                    entry.path
                )));
            }
        }
        Ok(())
    }
}

/// `name` (from an archive whose first component is `base`) moved to `root`.
fn rebase(name: &[u8], base: &[u8], root: &str) -> Result<Vec<u8>> {
    let display = tar::display_path(name);
    let rest = display.strip_prefix(base).filter(|rest| rest.is_empty() || rest[0] == b'/');
    let Some(rest) = rest else {
        return Err(Error::NotSpliceable(format!(
            "the archive of `/{root}` holds `{}`, outside it",
            String::from_utf8_lossy(name)
        )));
    };
    if rest.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(Error::NotSpliceable(format!(
            "the archive of `/{root}` holds `{}`, which climbs out of it",
            String::from_utf8_lossy(name)
        )));
    }
    let mut path = root.as_bytes().to_vec();
    path.extend_from_slice(rest);
    Ok(path)
}
