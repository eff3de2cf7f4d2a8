//! The store conformance suite against the backends that need no server.

use std::sync::Arc;

use envbuild_cache::store::conformance::{self, Options};
use envbuild_cache::store::memory::MemoryStore;

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(super::local_store(dir.path()), Options::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new()), Options::default()).await;
}
