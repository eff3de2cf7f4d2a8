//! Integration tests of the snapshot store through its library API. One binary, one module
//! per area; helpers here.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::print_stderr, unreachable_pub)]

mod conformance;
mod hostile;
mod integrity;
mod leaks;
mod order;
mod read_file;
mod roundtrip;
#[cfg(feature = "s3")]
mod s3;
mod splice;
mod transfer;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use envbuild_cache::extract::{ExtractOptions, ExtractReport};
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, Progress};
use envbuild_cache::store::local::LocalStore;
pub use envbuild_cache::testing::noise;
use envbuild_cache::{Result, SnapshotId, Store, restore};

pub fn local_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(LocalStore::open(dir).unwrap())
}

pub async fn import(store: &Arc<dyn Store>, tar: Vec<u8>) -> IngestReport {
    try_import(store, tar).await.unwrap()
}

pub async fn try_import(store: &Arc<dyn Store>, tar: Vec<u8>) -> Result<IngestReport> {
    let options = IngestOptions { spill_dir: std::env::temp_dir(), ..IngestOptions::default() };
    ingest::ingest(store.clone(), Box::new(std::io::Cursor::new(tar)), options, Arc::new(Progress::default()))
        .await
}

/// Stores `tar` as a hostile writer could, names that leave the root included: for tests of
/// what readers do with such a snapshot.
pub async fn import_unchecked(store: &Arc<dyn Store>, tar: Vec<u8>) -> IngestReport {
    let options = IngestOptions { unchecked_paths: true, ..IngestOptions::default() };
    ingest::ingest(store.clone(), Box::new(std::io::Cursor::new(tar)), options, Arc::new(Progress::default()))
        .await
        .unwrap()
}

pub async fn fetch_dir(store: &Arc<dyn Store>, id: &SnapshotId, dir: &Path) -> Result<ExtractReport> {
    let manifest = restore::read_manifest(&**store, id).await?;
    restore::fetch_to_dir(
        store.clone(),
        &manifest,
        dir,
        ExtractOptions::default(),
        4,
        Arc::new(Progress::default()),
    )
    .await
}

#[derive(Debug, Clone, Default)]
pub struct SharedVec(Arc<Mutex<Vec<u8>>>);

impl Write for SharedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn fetch_bytes(store: &Arc<dyn Store>, id: &SnapshotId) -> Result<Vec<u8>> {
    let manifest = restore::read_manifest(&**store, id).await?;
    let out = SharedVec::default();
    restore::write_tar(store.clone(), &manifest, out.clone(), 4, Arc::new(Progress::default())).await?;
    Ok(std::mem::take(&mut *out.0.lock().unwrap()))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
