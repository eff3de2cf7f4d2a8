//! The store conformance suite: the behaviour of [`Store`] as the module docs promise it,
//! checked against a real backend. Every backend's tests call [`run_all`] (or the checks one
//! by one), so local, memory, S3 servers and the HTTP client are held to one standard.
//!
//! Checks panic with a message naming the backend and the broken promise. Each run works under
//! a fresh random prefix, so it can share a bucket or directory with other data and runs.

#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;

use bytes::Bytes;

use super::{PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

/// Which optional promises the backend is held to.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Concurrent create-only writes of one path have exactly one winner. True for local,
    /// memory and moto; s3s-fs checks then writes, so two racing writers can both win.
    pub atomic_create_under_concurrency: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { atomic_create_under_concurrency: true }
    }
}

/// Runs every check.
pub async fn run_all(store: Arc<dyn Store>, options: Options) {
    let base = format!("v1/conformance/{:016x}", rand::random::<u64>());
    round_trip(&*store, &base).await;
    create_only(&*store, &base).await;
    absence(&*store, &base).await;
    metadata(&*store, &base).await;
    listing(&*store, &base).await;
    bounded_get(&*store, &base).await;
    compare_and_swap(&*store, &base).await;
    if options.atomic_create_under_concurrency {
        concurrent_create(store.clone(), &base).await;
    }
    cleanup(&*store, &base).await;
}

fn path(base: &str, rest: &str) -> ObjectPath {
    ObjectPath::new(format!("{base}/{rest}")).expect("conformance paths are valid")
}

pub async fn round_trip(store: &dyn Store, base: &str) {
    let where_ = store.location();
    for (i, len) in [0usize, 1, 1000, 5 * 1024 * 1024 + 17].into_iter().enumerate() {
        let p = path(base, &format!("rt/{i}:obj=@+%.bin"));
        let bytes = noise_bytes(len, i as u64);
        let outcome = store.put(&p, bytes.clone(), PutMode::Create).await.expect("put");
        assert!(
            matches!(outcome, PutOutcome::Written { .. }),
            "{where_}: a first create must write, got {outcome:?}"
        );
        let got = store.get(&p, u64::MAX).await.expect("get");
        assert!(got.bytes == bytes, "{where_}: {len} bytes did not round-trip");
    }
}

pub async fn create_only(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let p = path(base, "create-only");
    store.put(&p, Bytes::from_static(b"first"), PutMode::Create).await.expect("put");
    let outcome = store.put(&p, Bytes::from_static(b"second"), PutMode::Create).await.expect("second put");
    assert_eq!(
        outcome,
        PutOutcome::AlreadyExists,
        "{where_}: a create over an existing object must not write"
    );
    let got = store.get(&p, 1024).await.expect("get");
    assert_eq!(&got.bytes[..], b"first", "{where_}: a create-only write replaced an object");
    store.put(&p, Bytes::from_static(b"third"), PutMode::Overwrite).await.expect("overwrite");
    assert_eq!(
        &store.get(&p, 1024).await.expect("get").bytes[..],
        b"third",
        "{where_}: overwrite did not replace"
    );
}

pub async fn absence(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let p = path(base, "never-written");
    match store.get(&p, 1024).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{where_}: get of a missing object must be NotFound, got {other:?}"),
    }
    assert!(store.head(&p).await.expect("head").is_none(), "{where_}: head of a missing object must be None");
    store.delete(&p).await.expect("deleting a missing object succeeds");
    let q = path(base, "deleted");
    store.put(&q, Bytes::from_static(b"x"), PutMode::Create).await.expect("put");
    store.delete(&q).await.expect("delete");
    assert!(
        store.get(&q, 1024).await.is_err_and(|e| e.is_not_found()),
        "{where_}: a deleted object is still readable"
    );
    assert!(store.head(&q).await.expect("head").is_none(), "{where_}: a deleted object still has metadata");
}

pub async fn metadata(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let p = path(base, "meta");
    let PutOutcome::Written { etag } =
        store.put(&p, noise_bytes(1234, 9), PutMode::Create).await.expect("put")
    else {
        panic!("{where_}: first create must write");
    };
    let meta = store.head(&p).await.expect("head").expect("present");
    assert_eq!(meta.size, 1234, "{where_}: head reports the wrong size");
    assert_eq!(meta.path, p);
    assert_eq!(meta.etag, etag, "{where_}: head's ETag differs from the one put returned");
    assert_eq!(store.get(&p, u64::MAX).await.expect("get").etag, etag, "{where_}: get's ETag differs");
    store.put(&p, noise_bytes(1234, 10), PutMode::Overwrite).await.expect("overwrite");
    let after = store.head(&p).await.expect("head").expect("present");
    assert_ne!(after.etag, etag, "{where_}: new content kept the old ETag");
}

pub async fn listing(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let names = ["list/a/1", "list/a/2", "list/a/b/3", "list/ab/4", "list/c/5"];
    for name in names {
        store.put(&path(base, name), Bytes::from_static(b"x"), PutMode::Create).await.expect("put");
    }
    let mut got: Vec<String> = store
        .list(&format!("{base}/list/a/"))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.path.to_string())
        .collect();
    got.sort();
    let want: Vec<String> =
        ["list/a/1", "list/a/2", "list/a/b/3"].iter().map(|n| format!("{base}/{n}")).collect();
    assert_eq!(got, want, "{where_}: listing `list/a/` returned the wrong objects");
    let all = store.list(&format!("{base}/list/")).await.expect("list");
    assert_eq!(all.len(), names.len(), "{where_}: listing `list/` missed objects");
    assert!(all.iter().all(|m| m.size == 1), "{where_}: listing reports wrong sizes");
    let none = store.list(&format!("{base}/nothing-here/")).await.expect("list of an empty prefix");
    assert!(none.is_empty(), "{where_}: an empty prefix listed objects");
}

pub async fn bounded_get(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let p = path(base, "bounded");
    store.put(&p, noise_bytes(100, 3), PutMode::Create).await.expect("put");
    match store.get(&p, 99).await {
        Err(StoreError::TooLarge { size: 100, limit: 99, .. }) => {}
        other => panic!("{where_}: an object over the limit must be refused as TooLarge, got {other:?}"),
    }
    assert_eq!(store.get(&p, 100).await.expect("get at the limit").bytes.len(), 100);
}

pub async fn compare_and_swap(store: &dyn Store, base: &str) {
    let where_ = store.location();
    let p = path(base, "cas");
    let PutOutcome::Written { etag: first } =
        store.put(&p, Bytes::from_static(b"v1"), PutMode::Create).await.expect("put")
    else {
        panic!("{where_}: first create must write");
    };
    let PutOutcome::Written { etag: second } = store
        .put(&p, Bytes::from_static(b"v2"), PutMode::Update { etag: first.clone() })
        .await
        .expect("update")
    else {
        panic!("{where_}: an update with the current ETag must write");
    };
    match store.put(&p, Bytes::from_static(b"v3"), PutMode::Update { etag: first }).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{where_}: an update with a stale ETag must be a Conflict, got {other:?}"),
    }
    assert_eq!(
        &store.get(&p, 16).await.expect("get").bytes[..],
        b"v2",
        "{where_}: a lost update changed the object"
    );
    let missing = path(base, "cas-missing");
    match store.put(&missing, Bytes::from_static(b"x"), PutMode::Update { etag: second }).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{where_}: an update of a missing object must be a Conflict, got {other:?}"),
    }
}

pub async fn concurrent_create(store: Arc<dyn Store>, base: &str) {
    let where_ = store.location();
    for round in 0..5 {
        let p = path(base, &format!("race/{round}"));
        let writers: Vec<_> = (0..16u64)
            .map(|i| {
                let store = store.clone();
                let p = p.clone();
                tokio::spawn(async move {
                    let bytes = noise_bytes(4096, i + 1);
                    (store.put(&p, bytes.clone(), PutMode::Create).await, bytes)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            let (outcome, bytes) = writer.await.expect("writer task");
            if matches!(outcome.expect("put"), PutOutcome::Written { .. }) {
                winners.push(bytes);
            }
        }
        assert_eq!(winners.len(), 1, "{where_}: {} of 16 racing creates won (round {round})", winners.len());
        assert!(
            store.get(&p, u64::MAX).await.expect("get").bytes == winners[0],
            "{where_}: the stored object is not the winner's"
        );
    }
}

async fn cleanup(store: &dyn Store, base: &str) {
    for meta in store.list(&format!("{base}/")).await.unwrap_or_default() {
        let _ = store.delete(&meta.path).await;
    }
}

fn noise_bytes(len: usize, seed: u64) -> Bytes {
    Bytes::from(crate::testing::noise(len, seed))
}
