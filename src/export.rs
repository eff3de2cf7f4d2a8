//! Snapshots in the formats other tools take: a Docker image (`fetch --docker`), the tar
//! stream in a file (`fetch --tar`), an OCI image layout (`fetch --oci`) and an ext4 disk image
//! (`fetch --ext4`). Files and directories are written beside their destination (staging
//! guards: removed on failure, interrupt or crash, see `envbuild_cache::staging`) and renamed
//! into place when complete, so a failure leaves nothing there. A destination that exists is
//! refused unless `force`, which replaces it once the new one is complete.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use envbuild_builder::{oci, pipeline};
use envbuild_cache::extract::ExtractOptions;
use envbuild_cache::ingest::Progress;
use envbuild_cache::manifest::Manifest;
use envbuild_cache::staging::Staged;
use envbuild_cache::{SnapshotId, Store, restore};

use crate::error::{Error, Result, ResultExt};
use crate::session::Session;
use crate::{bridge, build};

/// Refuses a destination that exists, unless `force`.
fn vacant(target: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(target).is_ok() {
        return Err(Error::Failed(format!(
            "`{}` exists already\nhint: pass --force to replace it",
            target.display()
        )));
    }
    Ok(())
}

/// A private directory beside `target`, for building it.
fn staging_dir(target: &Path) -> Result<Staged> {
    Staged::dir_beside(target)
        .map_err(Error::io(format!("cannot create a staging directory beside `{}`", target.display())))
}

/// Puts `staged` at `target`, replacing what is there.
fn install(staged: Staged, target: &Path) -> Result<()> {
    restore::put_in_place(staged, target)
        .map_err(Error::io(format!("cannot move it into `{}`", target.display())))
}

/// Loads snapshot `id` into the Docker engine as the image `repo_tag`, with its OCI
/// configuration restored; returns the image id.
pub async fn to_docker(
    session: &Session,
    id: &SnapshotId,
    manifest: &Manifest,
    repo_tag: &str,
) -> Result<String> {
    let engine = session.engine.get().await?;
    let config = build::image_config(manifest)?;
    let labels = BTreeMap::from([(pipeline::SNAPSHOT_LABEL.to_owned(), id.to_string())]);
    let rootfs = bridge::snapshot_stream(session.store.clone(), manifest, session.jobs);
    engine
        .import(rootfs, repo_tag, &config, &labels)
        .await
        .with_context(|| format!("cannot load snapshot {id} into the Docker engine as `{repo_tag}`"))
}

/// Writes the snapshot's tar stream to the file `path`, through a temporary file beside it.
pub async fn tar_file(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    path: &Path,
    force: bool,
    jobs: usize,
    counters: Arc<Progress>,
) -> Result<()> {
    vacant(path, force)?;
    let (staged, file) = Staged::file_beside(path)
        .map_err(Error::io(format!("cannot create a file beside `{}`", path.display())))?;
    restore::write_tar(store, manifest, file, jobs, counters).await?;
    install(staged, path)
}

/// Writes the snapshot as an OCI image layout at `dir` (which must not exist, unless `force`).
pub async fn oci_layout(
    store: Arc<dyn Store>,
    id: &SnapshotId,
    manifest: &Manifest,
    dir: &Path,
    reference: &str,
    force: bool,
    jobs: usize,
) -> Result<oci::Layout> {
    vacant(dir, force)?;
    let staging = staging_dir(dir)?;
    let config = build::image_config(manifest)?;
    let labels = crate::image::labels(id, manifest);
    // The layer is stored as it is, and checked as it passes: a snapshot whose stream is not a
    // whole tar (only a hostile writer makes one) yields no layout.
    let (mut reader, checker) =
        envbuild_cache::tar::checked(bridge::stream_reader(bridge::snapshot_stream(store, manifest, jobs)));
    let (root, reference) = (staging.path().to_path_buf(), reference.to_owned());
    let layout = tokio::task::spawn_blocking(move || {
        let written = oci::write_layout(&root, &mut reader, &config, &labels, &reference);
        drop(reader);
        (written, checker.finish())
    })
    .await
    .map_err(|e| Error::Failed(format!("writing the OCI layout stopped: {e}")))?;
    let layout = match layout {
        (Ok(layout), Ok(_)) => layout,
        (Err(e), _) => return Err(e.into()),
        (Ok(_), Err(e)) => {
            return Err(Error::Failed(format!("the snapshot's stream is not a whole file system: {e}")));
        }
    };
    install(staging, dir)?;
    Ok(layout)
}

/// What the files under `root` need on an ext4 file system: (bytes, inodes).
fn footprint(root: &Path) -> (u64, u64) {
    const BLOCK: u64 = 4096;
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            inodes += 1;
            if meta.is_dir() {
                bytes += BLOCK;
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            } else if meta.file_type().is_symlink() && meta.len() > 60 {
                bytes += BLOCK; // only short targets fit in the inode
            }
        }
    }
    (bytes, inodes + 1)
}

/// Writes the snapshot as an ext4 image at `file`, sized to fit with `headroom` percent free.
pub async fn ext4(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    file: &Path,
    headroom: u32,
    force: bool,
    jobs: usize,
) -> Result<u64> {
    vacant(file, force)?;
    let mkfs = ["mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Command::new(p).arg("-V").output().is_ok())
        .ok_or_else(|| {
            Error::Failed(
                "mkfs.ext4 is not installed\nhint: install e2fsprogs (`apt-get install e2fsprogs`)".into(),
            )
        })?;
    let staging = staging_dir(file)?;
    let tree = staging.path().join("rootfs");
    restore::fetch_to_dir(
        store,
        manifest,
        &tree,
        ExtractOptions::default(),
        jobs,
        Arc::new(Progress::default()),
    )
    .await
    .context("cannot restore the snapshot to build the disk image")?;
    let (bytes, inodes) = footprint(&tree);
    // Metadata (inode tables at 256 bytes, bitmaps, the journal) on top of the data, then the
    // headroom; mkfs is asked again with more room if the estimate falls short.
    let mut size = (bytes + inodes * 256) * (100 + u64::from(headroom)) / 100 + 32 * 1024 * 1024;
    let (image, _) = Staged::file_beside(file)
        .map_err(Error::io(format!("cannot create a file beside `{}`", file.display())))?;
    for attempt in 0..4 {
        size = size.div_ceil(1 << 20) << 20;
        let f = std::fs::File::create(image.path())
            .map_err(Error::io(format!("cannot create `{}`", image.path().display())))?;
        f.set_len(size).map_err(Error::io("cannot size the disk image"))?;
        drop(f);
        let inode_count = (inodes + inodes / 5 + 1024).to_string();
        let out = Command::new(mkfs)
            .args(["-q", "-F", "-L", "envbuild", "-N", &inode_count, "-d"])
            .arg(&tree)
            .arg(image.path())
            .output()
            .map_err(Error::io("cannot run mkfs.ext4"))?;
        if out.status.success() {
            install(image, file)?;
            return Ok(size);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if attempt == 3
            || !(stderr.contains("space") || stderr.contains("allocate") || stderr.contains("full"))
        {
            return Err(Error::Failed(format!("mkfs.ext4 failed: {}", stderr.trim())));
        }
        size += size / 2;
    }
    Err(Error::Failed("mkfs.ext4 found no size that fits".into()))
}
