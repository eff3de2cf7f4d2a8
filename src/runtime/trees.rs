//! The host's materialized snapshots: one read-only tree per snapshot, its regular files
//! hardlinks into a content-addressed file store, as ostree and Nix keep theirs.
//!
//! A tree is restored from the verified chunk stream into a staging directory (journalled,
//! so `gc` removes what a crash left); as it is extracted each regular file is hashed and
//! either linked to the object that already holds the same bytes with the same mode, owner
//! and time (and never written), or written and made that object
//! (`envbuild_cache::extract::extract_sharing`); only then is the tree renamed into place, so
//! a tree that exists is complete. An object is `objects/XX/<sha256>.<mode>.<uid>.<gid>.<mtime>`:
//! hard links share metadata, so metadata is part of the name. Files with extended attributes
//! keep their own inodes.
//!
//! So a sibling snapshot (the next build of a repository) writes only its new files, and
//! every environment of a snapshot, as an overlay on its tree, shares its disk blocks and page
//! cache. Trees are never written after they are in place: an environment writes to its own
//! overlay upper directory.
//!
//! Bounded: `used/<id>` records each tree's size and, by its time, when it was last booted;
//! [`Trees::evict`] removes the least recently used trees that no environment uses until the
//! rest fit (`ENVBUILD_TREES_MAX`, default 50 GiB), and objects no tree links any more go
//! with them. A lock per snapshot keeps two boots from materializing one tree twice.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use envbuild_cache::extract::{self, ExtractOptions};
use envbuild_cache::ingest::Progress;
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{Digest, SnapshotId, Store, restore};

use super::Layout;
use crate::error::{Error, Result};

/// The bound on the trees' total size (`10G`, `512M`).
pub const TREES_MAX: &str = "ENVBUILD_TREES_MAX";
const DEFAULT_MAX: u64 = 50 << 30;

/// The trees of a runtime directory.
#[derive(Debug, Clone)]
pub struct Trees {
    layout: Layout,
}

/// What materializing a snapshot cost.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Materialized {
    /// The tree was there already.
    pub reused: bool,
    pub files: u64,
    /// Files linked to objects other trees had written.
    pub shared_files: u64,
    /// Bytes of files this tree added to the object store.
    pub new_bytes: u64,
}

/// A boot's hold on a tree (see [`Trees::materialize`]); released when dropped.
#[derive(Debug)]
pub struct TreeLock {
    _held: std::fs::File,
}

/// A tree, as `ps --all` and `gc` see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TreeInfo {
    pub snapshot: String,
    pub path: PathBuf,
    /// Bytes of its files (shared ones counted in every tree that has them).
    pub bytes: u64,
    pub last_used: Option<SystemTime>,
}

impl Trees {
    pub fn new(layout: Layout) -> Self {
        Self { layout }
    }

    /// Where the tree of `id` is (or will be).
    pub fn path(&self, id: &SnapshotId) -> PathBuf {
        self.layout.trees().join(id.0.hex())
    }

    fn used(&self, hex: &str) -> PathBuf {
        self.layout.root().join("used").join(hex)
    }

    /// The tree of `id`, materialized from `store` unless it is here already, and a lock on
    /// it: while it is held, `rm` and eviction leave the tree alone (hold it until an
    /// environment's record names the tree).
    pub async fn materialize(
        &self,
        store: Arc<dyn Store>,
        id: &SnapshotId,
        manifest: &Manifest,
        jobs: usize,
    ) -> Result<(Materialized, TreeLock)> {
        let trees = self.layout.trees();
        for dir in [trees.clone(), self.layout.objects(), self.layout.root().join("used")] {
            std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create `{}`", dir.display())))?;
        }
        let hex = id.0.hex();
        let lock_path = trees.join(format!(".lock-{hex}"));
        let lock = std::fs::File::create(&lock_path)
            .map_err(Error::io(format!("cannot create `{}`", lock_path.display())))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| Error::Failed(format!("waiting for the tree lock stopped: {e}")))?
            .map_err(Error::io(format!("cannot lock `{}`", lock_path.display())))?;
        let path = self.path(id);
        let outcome = if path.is_dir() {
            Materialized { reused: true, ..Materialized::default() }
        } else {
            let objects = self.layout.objects();
            let options = ExtractOptions { same_owner: true, devices: true, replace: false };
            let report = restore::fetch_to_dir_with(
                store,
                manifest,
                &path,
                options,
                jobs,
                Arc::new(Progress::default()),
                move |reader, root| extract::extract_sharing(reader, root, &options, &objects),
            )
            .await?;
            let _ = std::fs::write(self.used(&hex), report.bytes.to_string());
            Materialized {
                reused: false,
                files: report.files,
                shared_files: report.shared_files,
                new_bytes: report.new_object_bytes,
            }
        };
        self.touch(id);
        // The lock file stays while the tree does: removing it while another boot waits on it
        // would let a third lock a new file and materialize beside the second.
        Ok((outcome, TreeLock { _held: lock }))
    }

    /// Notes that `id` was booted now (least recently used trees go first).
    pub fn touch(&self, id: &SnapshotId) {
        let used = self.used(&id.0.hex());
        if let Ok(file) = std::fs::OpenOptions::new().append(true).open(&used) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Every tree here.
    pub fn list(&self) -> Vec<TreeInfo> {
        let Ok(entries) = std::fs::read_dir(self.layout.trees()) else { return Vec::new() };
        let mut out: Vec<TreeInfo> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let digest = Digest::from_hex(&name).ok()?;
                let used = self.used(&name);
                Some(TreeInfo {
                    snapshot: SnapshotId(digest).to_string(),
                    path: e.path(),
                    bytes: std::fs::read_to_string(&used)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0),
                    last_used: std::fs::metadata(&used).and_then(|m| m.modified()).ok(),
                })
            })
            .collect();
        out.sort_by_key(|t| t.last_used);
        out
    }

    /// Removes the tree at `path` (one of [`Trees::list`]), unless a boot holds its lock.
    pub fn remove(&self, path: &Path) -> Result<()> {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(()) };
        let lock_path = self.layout.trees().join(format!(".lock-{name}"));
        let lock = std::fs::File::create(&lock_path)
            .map_err(Error::io(format!("cannot create `{}`", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(Error::Failed(format!("the tree `{}` is being booted", path.display())));
        }
        let aside = self.layout.trees().join(format!(".removing-{name}-{}", std::process::id()));
        std::fs::rename(path, &aside)
            .map_err(Error::io(format!("cannot remove the tree `{}`", path.display())))?;
        let _ = std::fs::remove_file(self.used(name));
        let _ = std::fs::remove_file(self.layout.trees().join(format!(".lock-{name}")));
        std::fs::remove_dir_all(&aside).map_err(Error::io(format!("cannot remove `{}`", aside.display())))?;
        Ok(())
    }

    /// Removes least recently used trees not in `in_use` until the rest fit the bound, then
    /// what removals (here or by a crash) left: half-removed trees and objects no tree links.
    /// Returns the trees removed and the bytes of objects freed.
    pub fn evict(&self, in_use: &HashSet<PathBuf>) -> Result<(Vec<TreeInfo>, u64)> {
        let max =
            std::env::var(TREES_MAX).ok().and_then(|v| crate::store::parse_size(&v)).unwrap_or(DEFAULT_MAX);
        let trees = self.list();
        let mut total: u64 = trees.iter().map(|t| t.bytes).sum();
        let mut removed = Vec::new();
        for tree in trees {
            if total <= max {
                break;
            }
            if in_use.contains(&tree.path) {
                continue;
            }
            if let Err(e) = self.remove(&tree.path) {
                tracing::info!("kept a tree: {e}");
                continue;
            }
            total = total.saturating_sub(tree.bytes);
            removed.push(tree);
        }
        if let Ok(entries) = std::fs::read_dir(self.layout.trees()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".removing-")
                    && pid_of_leftover(&name).is_none_or(|pid| !super::alive(pid))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok((removed, self.sweep_objects()))
    }

    /// Removes the objects no tree links (a link count of one); their bytes.
    pub fn sweep_objects(&self) -> u64 {
        sweep_objects(&self.layout.objects())
    }
}

/// The pid at the end of a `.removing-NAME-PID` leftover.
fn pid_of_leftover(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// Objects no tree links (a link count of one): removed; their bytes.
fn sweep_objects(objects: &Path) -> u64 {
    let mut freed = 0;
    let Ok(dirs) = std::fs::read_dir(objects) else { return 0 };
    for dir in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for file in files.flatten() {
            if let Ok(meta) = file.path().symlink_metadata()
                && meta.is_file()
                && meta.nlink() == 1
                && std::fs::remove_file(file.path()).is_ok()
            {
                freed += meta.len();
            }
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_a_boot_holds_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(Layout::at(dir.path()));
        let id = SnapshotId(Digest::of(b"a snapshot"));
        let path = trees.path(&id);
        std::fs::create_dir_all(path.join("etc")).unwrap();
        let lock = std::fs::File::create(dir.path().join(format!("trees/.lock-{}", id.0.hex()))).unwrap();
        lock.lock().unwrap();
        let held = TreeLock { _held: lock };
        let refused = trees.remove(&path).unwrap_err();
        assert!(refused.to_string().contains("is being booted"), "{refused}");
        assert!(path.is_dir());
        drop(held);
        trees.remove(&path).unwrap();
        assert!(!path.exists());
    }
}
