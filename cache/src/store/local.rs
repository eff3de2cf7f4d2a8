//! The local directory store, the embedded default (`~/.cache/envbuild`).
//!
//! Objects are files at `<root>/<object path>`. Every write goes to a temporary file in
//! `<root>/tmp/` (same file system), is fsynced, and is then put in place atomically:
//! create-only writes with `link(2)`, which fails if the target exists (so two writers of one
//! chunk cannot clobber each other and nothing is ever overwritten in place), other writes with
//! `rename(2)`. The parent directory is fsynced afterwards so the entry itself is durable.
//!
//! ETags are `<inode>-<size>-<mtime ns>`: every write creates a new inode, so a changed object
//! always has a changed ETag, and listing needs no reading. Compare-and-swap holds an exclusive
//! lock on `<root>/tmp/cas.lock` for the read-compare-rename, so concurrent processes
//! serialize. Leftover temporary files of crashed writers are removed by `gc`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

/// Where temporary files live, relative to the root. Outside `v1/` so listings never see them.
pub const TMP_DIR: &str = "tmp";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which is created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(&root.into(), true)
    }

    /// The store at `root`, which must exist: for commands that only read, so that a mistyped
    /// location is an error rather than a new, empty store.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(&root.into(), false)
    }

    fn open_with(root: &Path, create: bool) -> Result<Self, StoreError> {
        let store = format!("local store `{}`", root.display());
        if !create && !root.join(TMP_DIR).is_dir() && !root.join("v1").is_dir() {
            let what = if root.exists() { "it holds no store yet" } else { "it does not exist" };
            return Err(StoreError::Unusable {
                store,
                message: what.to_owned(),
                hint: Some(
                    "check the location (`--store`, ENVBUILD_STORE); `build` and `import` create a store"
                        .into(),
                ),
            });
        }
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(|source| StoreError::Io {
            store: store.clone(),
            operation: "create",
            path: root.display().to_string(),
            source,
        })?;
        let root = std::fs::canonicalize(root).map_err(|source| StoreError::Io {
            store,
            operation: "open",
            path: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, path: &ObjectPath) -> PathBuf {
        self.root.join(path.as_str())
    }

    fn io_error(
        &self,
        operation: &'static str,
        path: &ObjectPath,
    ) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        let path = path.to_string();
        move |source| StoreError::Io { store: self.location(), operation, path, source }
    }

    fn put_blocking(&self, path: &ObjectPath, data: &[u8], mode: &PutMode) -> Result<PutOutcome, StoreError> {
        let target = self.file(path);
        let parent = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(self.io_error("create the directory of", path))?;
        let tmp = self.write_temp(data).map_err(self.io_error("write a temporary file for", path))?;
        let result: std::io::Result<()> = match mode {
            PutMode::Create => match std::fs::hard_link(tmp.path(), &target) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(PutOutcome::AlreadyExists);
                }
                Err(e) => Err(e),
            },
            PutMode::Overwrite => tmp.persist(&target).map(|_| ()).map_err(|e| e.error),
            PutMode::Update { etag } => {
                let lock = self.cas_lock().map_err(self.io_error("lock for update", path))?;
                let current = std::fs::symlink_metadata(&target).ok().map(|m| etag_of(&m));
                if current.as_deref() != Some(etag.as_str()) {
                    drop(lock);
                    return Err(StoreError::Conflict { store: self.location(), path: path.to_string() });
                }
                let persisted = tmp.persist(&target).map(|_| ()).map_err(|e| e.error);
                drop(lock);
                persisted
            }
        };
        result.map_err(self.io_error("write", path))?;
        sync_dir(parent).map_err(self.io_error("sync the directory of", path))?;
        let meta = std::fs::symlink_metadata(&target).map_err(self.io_error("stat", path))?;
        Ok(PutOutcome::Written { etag: etag_of(&meta) })
    }

    fn write_temp(&self, data: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
        let mut tmp = tempfile::Builder::new().prefix(".put-").tempfile_in(self.root.join(TMP_DIR))?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        Ok(tmp)
    }

    fn cas_lock(&self) -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(TMP_DIR).join("cas.lock"))?;
        file.lock()?;
        Ok(file)
    }

    fn get_blocking(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Objects are regular files. A symlink in their place (planted, or left by a tool) is
        // not followed out of the store, and a FIFO is opened without blocking, so neither can
        // hang or redirect a read: both are reported as damage naming the object.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits().cast_signed())
            .open(self.file(path));
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { store: self.location(), path: path.to_string() });
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(self.not_regular(path, "a symbolic link"));
            }
            Err(e) => return Err(self.io_error("open", path)(e)),
        };
        let meta = file.metadata().map_err(self.io_error("stat", path))?;
        if !meta.is_file() {
            return Err(self.not_regular(path, kind_of(&meta)));
        }
        if meta.len() > limit {
            return Err(StoreError::TooLarge {
                store: self.location(),
                path: path.to_string(),
                size: meta.len(),
                limit,
            });
        }
        // The size was checked above; `take` guards against a file that grows meanwhile.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        (&mut file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(self.io_error("read", path))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                store: self.location(),
                path: path.to_string(),
                size: bytes.len() as u64,
                limit,
            });
        }
        Ok(GetResult { bytes: Bytes::from(bytes), etag: etag_of(&meta) })
    }

    fn meta_of(path: ObjectPath, meta: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            path,
            size: meta.len(),
            last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            etag: etag_of(meta),
        }
    }

    fn not_regular(&self, path: &ObjectPath, what: &'static str) -> StoreError {
        StoreError::NotRegular { store: self.location(), path: path.to_string(), what }
    }

    fn head_blocking(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        match std::fs::symlink_metadata(self.file(path)) {
            Ok(meta) if meta.is_file() => Ok(Some(Self::meta_of(path.clone(), &meta))),
            // A directory is a level of the layout, not an object; anything else is damage.
            Ok(meta) if meta.is_dir() => Ok(None),
            Ok(meta) => Err(self.not_regular(path, kind_of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("stat", path)(e)),
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        crate::layout::check_prefix(prefix)?;
        // Walk the deepest directory the prefix names in full, then filter by the prefix.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = self.root.join(dir_part);
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        store: self.location(),
                        operation: "list",
                        path: dir.display().to_string(),
                        source,
                    });
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| StoreError::Io {
                    store: self.location(),
                    operation: "list",
                    path: dir.display().to_string(),
                    source,
                })?;
                let file_type = entry.file_type().map_err(|source| StoreError::Io {
                    store: self.location(),
                    operation: "list",
                    path: entry.path().display().to_string(),
                    source,
                })?;
                let full = entry.path();
                if file_type.is_dir() {
                    stack.push(full);
                    continue;
                }
                // Anything else at an object's path is listed, so that whoever reads it next
                // reports it as damage rather than the object silently not existing.
                let Some(rel) = full.strip_prefix(&self.root).ok().and_then(Path::to_str) else { continue };
                if !rel.starts_with(prefix) {
                    continue;
                }
                let Ok(path) = ObjectPath::new(rel) else { continue };
                match entry.metadata() {
                    Ok(meta) => out.push(Self::meta_of(path, &meta)),
                    // Deleted between readdir and stat: it is simply not there any more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StoreError::Io {
                            store: self.location(),
                            operation: "stat",
                            path: rel.to_owned(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn delete_blocking(&self, path: &ObjectPath) -> Result<(), StoreError> {
        match std::fs::remove_file(self.file(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("delete", path)(e)),
        }
    }
}

/// What a file that is not regular is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let nanos = meta.mtime().wrapping_mul(1_000_000_000).wrapping_add(meta.mtime_nsec());
    format!("{:x}-{:x}-{:x}", meta.ino(), meta.len(), nanos)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Runs blocking file-system work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    store: &LocalStore,
    f: impl FnOnce(LocalStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    let location = store.location();
    tokio::task::spawn_blocking(move || f(store)).await.unwrap_or_else(|join| {
        Err(StoreError::Backend {
            store: location,
            operation: "run",
            path: String::new(),
            message: "the worker thread failed".to_owned(),
            source: Some(Box::new(join)),
            retryable: false,
        })
    })
}

#[async_trait]
impl Store for LocalStore {
    fn location(&self) -> String {
        format!("local store `{}`", self.root.display())
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let path = path.clone();
        blocking(self, move |s| s.put_blocking(&path, &data, &mode)).await
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let path = path.clone();
        blocking(self, move |s| s.get_blocking(&path, limit)).await
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        let path = path.clone();
        blocking(self, move |s| s.head_blocking(&path)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = prefix.to_owned();
        blocking(self, move |s| s.list_blocking(&prefix)).await
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        let path = path.clone();
        blocking(self, move |s| s.delete_blocking(&path)).await
    }

    /// Temporary files of writers that crashed before putting them in place.
    async fn sweep_abandoned(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        blocking(self, move |s| {
            let Ok(entries) = std::fs::read_dir(s.root.join(TMP_DIR)) else { return Ok(0) };
            let mut removed = 0;
            for entry in entries.filter_map(Result::ok) {
                let stale = entry.file_name().to_string_lossy().starts_with(".put-")
                    && entry.metadata().ok().and_then(|m| m.modified().ok()).is_some_and(|t| t < cutoff);
                if stale && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}
