//! Snapshots in the formats other tools take: an OCI image layout (`fetch --oci`) and an ext4
//! disk image (`fetch --ext4`). Both are written beside their destination and renamed into
//! place when complete, so a failure leaves nothing there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use envbuild_builder::oci;
use envbuild_cache::extract::ExtractOptions;
use envbuild_cache::ingest::Progress;
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{Store, restore};

use crate::bridge;

/// A private directory beside `target`, for building it.
fn staging_beside(target: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create `{}`", parent.display()))?;
    tempfile::Builder::new()
        .prefix(".envbuild-export-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in `{}`", parent.display()))
}

/// Writes the snapshot as an OCI image layout at `dir` (which must not exist).
pub async fn oci_layout(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    dir: &Path,
    reference: &str,
    jobs: usize,
) -> anyhow::Result<oci::Layout> {
    if dir.exists() {
        bail!("`{}` exists already; the OCI layout goes into a new directory", dir.display());
    }
    let staging = staging_beside(dir)?;
    let config = manifest.image_config.as_ref().map(oci::from_json).unwrap_or_default();
    let mut reader = bridge::stream_reader(bridge::snapshot_stream(store, manifest, jobs));
    let (root, reference) = (staging.path().to_path_buf(), reference.to_owned());
    let layout =
        tokio::task::spawn_blocking(move || oci::write_layout(&root, &mut reader, &config, &reference))
            .await??;
    std::fs::rename(staging.keep(), dir)
        .with_context(|| format!("cannot move the layout into `{}`", dir.display()))?;
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
    jobs: usize,
) -> anyhow::Result<u64> {
    let mkfs = ["mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Command::new(p).arg("-V").output().is_ok())
        .context("mkfs.ext4 is not installed\nhint: install e2fsprogs (`apt-get install e2fsprogs`)")?;
    let staging = staging_beside(file)?;
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
    let image: PathBuf = staging.path().join("disk.ext4");
    for attempt in 0..4 {
        size = size.div_ceil(1 << 20) << 20;
        let f =
            std::fs::File::create(&image).with_context(|| format!("cannot create `{}`", image.display()))?;
        f.set_len(size).context("cannot size the disk image")?;
        drop(f);
        let inode_count = (inodes + inodes / 5 + 1024).to_string();
        let out = Command::new(mkfs)
            .args(["-q", "-F", "-L", "envbuild", "-N", &inode_count, "-d"])
            .arg(&tree)
            .arg(&image)
            .output()
            .context("cannot run mkfs.ext4")?;
        if out.status.success() {
            std::fs::rename(&image, file)
                .with_context(|| format!("cannot move the disk image to `{}`", file.display()))?;
            return Ok(size);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if attempt == 3
            || !(stderr.contains("space") || stderr.contains("allocate") || stderr.contains("full"))
        {
            bail!("mkfs.ext4 failed: {}", stderr.trim());
        }
        size += size / 2;
    }
    unreachable!("the loop returns or fails")
}
