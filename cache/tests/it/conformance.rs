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

/// Decorators keep every guarantee of the store they wrap.
#[tokio::test(flavor = "multi_thread")]
async fn retrying_memory_store_conforms() {
    use envbuild_cache::store::retry::{RetryPolicy, Retrying};
    let store = Retrying::new(MemoryStore::new(), RetryPolicy::default());
    conformance::run_all(Arc::new(store), Options::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_memory_store_conforms() {
    use envbuild_cache::store::cached::Cached;
    let cache = tempfile::tempdir().unwrap();
    let store = Cached::new(MemoryStore::new(), cache.path(), 64 << 20);
    conformance::run_all(Arc::new(store), Options::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_retrying_memory_store_conforms() {
    use envbuild_cache::store::cached::Cached;
    use envbuild_cache::store::retry::{RetryPolicy, Retrying};
    let cache = tempfile::tempdir().unwrap();
    let store =
        Cached::new(Retrying::new(MemoryStore::new(), RetryPolicy::default()), cache.path(), 64 << 20);
    conformance::run_all(Arc::new(store), Options::default()).await;
}
