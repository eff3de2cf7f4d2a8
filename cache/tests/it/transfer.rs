//! Copying snapshots between stores, surviving faults, and the local chunk cache.

use std::sync::Arc;
use std::time::Duration;

use envbuild_cache::catalog::{self, KeyRecord};
use envbuild_cache::ingest::Progress;
use envbuild_cache::store::cached::Cached;
use envbuild_cache::store::counting::Counting;
use envbuild_cache::store::faulty::{FaultPlan, FaultyStore};
use envbuild_cache::store::memory::MemoryStore;
use envbuild_cache::store::retry::{RetryPolicy, Retrying};
use envbuild_cache::testing::{RawEntry, write_tar};
use envbuild_cache::{Digest, SnapshotId, Store, layout, restore, transfer, verify};

#[cfg(feature = "s3")]
use super::s3::{fresh_store, server};
use super::{fetch_bytes, import, noise};

/// A 24 MiB image; `edit` changes one small file in the middle.
fn image(edit: bool) -> Vec<u8> {
    let middle: &[u8] = if edit { b"version 2" } else { b"version 1" };
    write_tar(&[
        RawEntry::file("a", &noise(12 * 1024 * 1024, 1)),
        RawEntry::file("m", middle),
        RawEntry::file("z", &noise(12 * 1024 * 1024, 2)),
    ])
}

async fn copy(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    id: &SnapshotId,
) -> envbuild_cache::Result<transfer::CopyReport> {
    transfer::copy_snapshot(from, to, id, 8, &Arc::new(Progress::default())).await
}

async fn problems(store: &Arc<dyn Store>) -> usize {
    verify::verify(store, &[], true, 4, &Arc::new(Progress::default())).await.unwrap().problems.len()
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
        attempt_timeout: Duration::from_secs(2),
    }
}

/// Push to `remote`, pull into a fresh local store: byte-identical, keys included, and a second
/// push and a sibling pull send only what is missing.
async fn push_and_pull_through(remote: Arc<dyn Store>) {
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let v1 = import(&local, image(false)).await;
    let record = KeyRecord {
        format: catalog::KEY_FORMAT.into(),
        key: Digest::of(b"env key"),
        snapshot: v1.id,
        created: catalog::now_rfc3339(),
        builder: "test".into(),
        info: serde_json::Value::Null,
    };
    catalog::write_key(&*local, &record, false).await.unwrap();

    let pushed = copy(&local, &remote, &v1.id).await.unwrap();
    assert!(pushed.published && pushed.copied_chunks == pushed.chunks && pushed.keys == 1, "{pushed:?}");
    let again = copy(&local, &remote, &v1.id).await.unwrap();
    assert_eq!((again.copied_chunks, again.published), (0, false), "a second push sends nothing");

    let elsewhere: Arc<dyn Store> = Arc::new(MemoryStore::new());
    copy(&remote, &elsewhere, &v1.id).await.unwrap();
    assert_eq!(fetch_bytes(&elsewhere, &v1.id).await.unwrap(), image(false));
    assert_eq!(catalog::read_key(&*elsewhere, &record.key).await.unwrap().unwrap().snapshot, v1.id);

    // The sibling: only the chunk around the edit travels, with the chunk of each list (chunk
    // list, table of contents) that names it.
    let v2 = import(&local, image(true)).await;
    let pushed = copy(&local, &remote, &v2.id).await.unwrap();
    assert!(pushed.copied_chunks <= 4 && pushed.copied_bytes < pushed.total_bytes / 4, "{pushed:?}");
    let pulled = copy(&remote, &elsewhere, &v2.id).await.unwrap();
    assert!(pulled.copied_chunks <= 4, "{pulled:?}");
    assert_eq!(fetch_bytes(&elsewhere, &v2.id).await.unwrap(), image(true));
    assert_eq!(problems(&remote).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_between_memory_stores() {
    push_and_pull_through(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_through_moto() {
    let Some(endpoint) = server("ENVBUILD_TEST_MOTO") else { return };
    push_and_pull_through(Arc::new(Retrying::new(fresh_store(&endpoint).await, quick(8)))).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_through_s3s_fs() {
    let Some(endpoint) = server("ENVBUILD_TEST_S3S") else { return };
    push_and_pull_through(Arc::new(Retrying::new(fresh_store(&endpoint).await, quick(8)))).await;
}

/// 30% of requests fail with 5xx, and more faults on top: push and pull still succeed and the
/// bytes are identical.
async fn survives_faults(remote: Arc<dyn Store>, seed: u64) {
    let plan = FaultPlan {
        seed,
        server_error: 0.30,
        conflict: 0.03,
        lost_write_answer: 0.05,
        truncate: 0.03,
        bit_flip: 0.03,
        fail_reads_over: Some(512 * 1024),
        max_latency: Duration::from_millis(3),
        hang: 0.01,
        ..FaultPlan::default()
    };
    let faulty = Arc::new(FaultyStore::new(remote, plan));
    let through_faults: Arc<dyn Store> = Arc::new(Retrying::new(faulty.clone(), quick(40)));
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    copy(&local, &through_faults, &report.id).await.unwrap();
    let back: Arc<dyn Store> = Arc::new(MemoryStore::new());
    copy(&through_faults, &back, &report.id).await.unwrap();
    assert_eq!(fetch_bytes(&back, &report.id).await.unwrap(), image(false));
    assert!(faulty.injected.load(std::sync::atomic::Ordering::Relaxed) > 10, "faults were injected");
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_survive_thirty_percent_server_errors() {
    for seed in 1..=3 {
        survives_faults(Arc::new(MemoryStore::new()), seed).await;
    }
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_survive_faults_against_moto() {
    let Some(endpoint) = server("ENVBUILD_TEST_MOTO") else { return };
    survives_faults(Arc::new(fresh_store(&endpoint).await), 42).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_are_a_clear_error_and_publish_nothing() {
    let remote = Arc::new(MemoryStore::new());
    let always_failing: Arc<dyn Store> = Arc::new(Retrying::new(
        FaultyStore::new(remote.clone(), FaultPlan { seed: 7, server_error: 0.9, ..FaultPlan::default() }),
        quick(3),
    ));
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    let err = copy(&local, &always_failing, &report.id).await.unwrap_err();
    assert!(err.to_string().contains("gave up after 3 attempts"), "{err}");
    assert!(remote.head(&layout::snapshot(&report.id)).await.unwrap().is_none(), "nothing may be published");
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_both_succeed_and_store_one_copy() {
    let Some(endpoint) = server("ENVBUILD_TEST_MOTO") else { return };
    let remote: Arc<dyn Store> = Arc::new(Retrying::new(fresh_store(&endpoint).await, quick(8)));
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    let (a, b) = tokio::join!(copy(&local, &remote, &report.id), copy(&local, &remote, &report.id));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.published != b.published, "exactly one push publishes the manifest");
    let chunks = remote.list(layout::CHUNKS).await.unwrap();
    assert_eq!(chunks.len(), a.chunks, "one copy of each chunk");
    assert_eq!(problems(&remote).await, 0);
}

/// The cache's copy of the object named `name`, wherever under `dir` it is.
fn cached_copy(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            if entry.file_type().ok()?.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() == name {
                return Some(entry.path());
            }
        }
    }
    None
}

/// Two stores behind one cache directory never answer for each other, and `verify
/// --read-data` reads the store, not the cache: a chunk deleted and another damaged in the
/// store are found with the cache warm.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_cache_answers_for_no_other_store_and_never_for_verify() {
    let cache_dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    let first = Arc::new(MemoryStore::named("first"));
    copy(&local, &(first.clone() as Arc<dyn Store>), &report.id).await.unwrap();
    let cached: Arc<dyn Store> = Arc::new(Cached::new(first.clone(), cache_dir.path(), 1 << 30));
    assert_eq!(fetch_bytes(&cached, &report.id).await.unwrap(), image(false), "the cache is warm");
    // Another store with the same manifest but none of the chunks: the cache does not fill in.
    let second = Arc::new(MemoryStore::named("second"));
    let manifest_path = layout::snapshot(&report.id);
    let manifest_bytes = local.get(&manifest_path, u64::MAX).await.unwrap().bytes;
    second.put(&manifest_path, manifest_bytes, envbuild_cache::store::PutMode::Create).await.unwrap();
    let other: Arc<dyn Store> = Arc::new(Cached::new(second, cache_dir.path(), 1 << 30));
    assert!(fetch_bytes(&other, &report.id).await.is_err(), "another store's chunks came from the cache");
    // Damage in the first store: one chunk deleted, another flipped.
    let manifest = restore::read_manifest(&*local, &report.id).await.unwrap();
    let (gone, flipped) = (manifest.chunks[0], manifest.chunks[1]);
    first.delete(&layout::chunk(&gone.digest)).await.unwrap();
    let path = layout::chunk(&flipped.digest);
    let mut bytes = first.get(&path, u64::MAX).await.unwrap().bytes.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    first.put(&path, bytes.into(), envbuild_cache::store::PutMode::Overwrite).await.unwrap();
    let verified =
        envbuild_cache::verify::verify(&cached, &[], true, 4, &Arc::new(Progress::default())).await.unwrap();
    let damaged: Vec<&str> = verified.problems.iter().map(|p| p.object.as_str()).collect();
    assert!(damaged.contains(&format!("chunk {}", gone.digest).as_str()), "{damaged:?}");
    assert!(damaged.contains(&format!("chunk {}", flipped.digest).as_str()), "{damaged:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chunk_cache_downloads_each_chunk_once() {
    let remote = Arc::new(Counting::new(MemoryStore::new()));
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    copy(&local, &(remote.clone() as Arc<dyn Store>), &report.id).await.unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cached: Arc<dyn Store> = Arc::new(Cached::new(remote.clone(), cache_dir.path(), 1 << 30));
    let manifest = restore::read_manifest(&*cached, &report.id).await.unwrap();

    // Sixteen concurrent readers of one chunk: one download.
    let chunk = manifest.chunks[0];
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { restore::fetch_chunk(&*cached, &chunk).await.unwrap() })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let path = layout::chunk(&chunk.digest).to_string();
    assert_eq!(remote.with(|c| c.gets[&path]), 1, "concurrent readers downloaded the chunk more than once");

    // A whole fetch, twice: the second downloads nothing.
    assert_eq!(fetch_bytes(&cached, &report.id).await.unwrap(), image(false));
    let after_first = remote.with(|c| c.get_bytes);
    assert_eq!(fetch_bytes(&cached, &report.id).await.unwrap(), image(false));
    assert_eq!(remote.with(|c| c.get_bytes), after_first, "the second fetch downloaded again");

    // A damaged cached copy is dropped and read again from the remote.
    let cached_file = cached_copy(cache_dir.path(), &chunk.digest.hex()).unwrap();
    let mut bytes = std::fs::read(&cached_file).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&cached_file, bytes).unwrap();
    assert_eq!(fetch_bytes(&cached, &report.id).await.unwrap(), image(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chunk_cache_stays_within_its_bound() {
    let remote = Arc::new(MemoryStore::new());
    let local: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let report = import(&local, image(false)).await;
    copy(&local, &(remote.clone() as Arc<dyn Store>), &report.id).await.unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let limit = 8 * 1024 * 1024;
    let cached: Arc<dyn Store> = Arc::new(Cached::new(remote, cache_dir.path(), limit));
    assert_eq!(fetch_bytes(&cached, &report.id).await.unwrap(), image(false));
    let mut total = 0;
    let mut stack = vec![cache_dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                if entry.file_name() != "locks" {
                    stack.push(entry.path());
                }
            } else {
                total += entry.metadata().unwrap().len();
            }
        }
    }
    // The sweep runs as data is added, so the cache may overshoot by what one sweep interval adds.
    assert!(total <= limit + limit / 20 + 4 * 1024 * 1024, "the cache holds {total} bytes, limit {limit}");
}
