//! A local cache of a remote store's immutable objects, as a decorator.
//!
//! Chunks and manifests are named by their content and never change, so a copy read once can
//! serve every later read, from this process or another: fetching a snapshot a second time, or
//! a sibling that shares most chunks, downloads only what is missing. Mutable objects (keys,
//! refs, leases, secrets) always go to the remote, and so does `head`: a local copy says
//! nothing about whether the remote still has the object, and `push` relies on `head` to know
//! what to send.
//!
//! - **Several processes at once.** Files are written to a temporary name and renamed into
//!   place, so a reader sees a whole file or none. A download takes an exclusive lock on one of
//!   4096 lock files chosen by the object's name and checks the cache again once it holds it,
//!   so concurrent fetches of one chunk on one host (threads or processes) download it once.
//! - **Bounded, least recently used.** A hit refreshes the file's modification time; when the
//!   bytes added since the last sweep pass a twentieth of the limit, a sweep (one process at a
//!   time, under a lock) deletes the least recently used files until the cache is under 90% of
//!   the limit. Deleting a file another process is reading is harmless on Unix.
//! - **Never trusted.** The cache returns bytes; the callers verify them as they verify the
//!   remote's. A copy found damaged is dropped through [`Store::invalidate`] and read again
//!   from the remote. Checks of the store itself (`verify --read-data`) read past the cache
//!   ([`Store::get_uncached`]): a local copy says nothing of what the store still holds.
//! - **One cache per store.** The directory holds a subdirectory per store location (a hash
//!   of it), so two stores never answer for each other, even for objects of the same name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::{CHUNKS, ObjectPath, SNAPSHOTS};

#[derive(Debug)]
pub struct Cached<S> {
    inner: S,
    dir: PathBuf,
    max_bytes: u64,
    added_since_sweep: AtomicU64,
}

fn cacheable(path: &ObjectPath) -> bool {
    path.as_str().starts_with(CHUNKS) || path.as_str().starts_with(SNAPSHOTS)
}

impl<S: Store> Cached<S> {
    /// Caches `inner`'s immutable objects under `dir` (in a subdirectory of its own, named by
    /// its location), holding at most about `max_bytes`.
    pub fn new(inner: S, dir: &Path, max_bytes: u64) -> Self {
        let own = crate::digest::Digest::of(inner.location().as_bytes()).hex()[..16].to_owned();
        Self { dir: dir.join(own), inner, max_bytes, added_since_sweep: AtomicU64::new(0) }
    }

    fn file(&self, path: &ObjectPath) -> PathBuf {
        self.dir.join(path.as_str())
    }

    fn lock_file(&self, path: &ObjectPath) -> PathBuf {
        let name = path.as_str().rsplit('/').next().unwrap_or_default();
        let stripe: String = name.chars().take(3).collect();
        self.dir.join("locks").join(format!("{stripe}.lock"))
    }

    /// The cached copy, refreshing its place in the LRU order.
    fn read_cached(file: &Path, limit: u64) -> Option<Bytes> {
        let meta = std::fs::metadata(file).ok()?;
        if meta.len() > limit {
            return None;
        }
        let bytes = std::fs::read(file).ok()?;
        // Best effort: a failure only makes this copy look older.
        let _ =
            std::fs::File::options().write(true).open(file).and_then(|f| f.set_modified(SystemTime::now()));
        Some(Bytes::from(bytes))
    }

    fn write_cached(&self, path: &ObjectPath, bytes: &[u8]) {
        let file = self.file(path);
        let written = (|| -> std::io::Result<()> {
            let parent = file.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(parent)?;
            let mut tmp = tempfile::Builder::new().prefix(".cache-").tempfile_in(parent)?;
            tmp.write_all(bytes)?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        })();
        match written {
            Ok(()) => {
                let added = self.added_since_sweep.fetch_add(bytes.len() as u64, Ordering::Relaxed)
                    + bytes.len() as u64;
                if added > self.max_bytes / 20 {
                    self.added_since_sweep.store(0, Ordering::Relaxed);
                    self.sweep();
                }
            }
            Err(e) => tracing::debug!("cannot cache `{path}`: {e}"),
        }
    }

    /// Deletes least recently used files until the cache is under 90% of its limit.
    fn sweep(&self) {
        let Ok(lock) = open_lock(&self.dir.join("locks").join("sweep.lock")) else { return };
        if lock.try_lock().is_err() {
            return; // another process is sweeping
        }
        let mut files = Vec::new();
        let mut stack = vec![self.dir.join("v1")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), entry.path()));
                }
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let target = self.max_bytes / 10 * 9;
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Reads through the cache: a hit is served locally; a miss downloads once per host.
    async fn get_through(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let file = self.file(path);
        let cached = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || Self::read_cached(&file, limit)).await.ok().flatten()
        };
        if let Some(bytes) = cached {
            return Ok(GetResult { bytes, etag: String::new() });
        }
        // Hold the object's lock while downloading; whoever held it before may have cached it.
        let lock_path = self.lock_file(path);
        let lock = tokio::task::spawn_blocking(move || {
            let file = open_lock(&lock_path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .ok()
        .and_then(Result::ok);
        if lock.is_some() {
            let file = file.clone();
            if let Some(bytes) =
                tokio::task::spawn_blocking(move || Self::read_cached(&file, limit)).await.ok().flatten()
            {
                return Ok(GetResult { bytes, etag: String::new() });
            }
        }
        let got = self.inner.get(path, limit).await?;
        self.write_cached(path, &got.bytes);
        drop(lock);
        Ok(got)
    }
}

fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

#[async_trait]
impl<S: Store> Store for Cached<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let outcome = self.inner.put(path, data.clone(), mode).await?;
        // What was just written (or was already there, with these same contents) is worth
        // keeping: a push is often followed by a pull elsewhere on the same host.
        if cacheable(path) && !self.file(path).exists() {
            self.write_cached(path, &data);
        }
        Ok(outcome)
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        if cacheable(path) { self.get_through(path, limit).await } else { self.inner.get(path, limit).await }
    }

    async fn get_uncached(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        self.inner.get_uncached(path, limit).await
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        let _ = std::fs::remove_file(self.file(path));
        self.inner.delete(path).await
    }

    async fn sweep_abandoned(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        self.inner.sweep_abandoned(cutoff).await
    }

    async fn invalidate(&self, path: &ObjectPath) {
        let _ = std::fs::remove_file(self.file(path));
        self.inner.invalidate(path).await;
    }
}
