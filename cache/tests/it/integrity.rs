//! Damage is detected and named, never passed on; `gc` keeps what is reachable and removes
//! what is not.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envbuild_cache::gc::{self, GcOptions};
use envbuild_cache::ingest::Progress;
use envbuild_cache::layout;
use envbuild_cache::store::local::LocalStore;
use envbuild_cache::store::memory::MemoryStore;
use envbuild_cache::testing::{RawEntry, write_tar};
use envbuild_cache::{Store, restore, verify};

use super::{fetch_bytes, fetch_dir, import, noise};

fn three_chunk_tar(seed: u64) -> Vec<u8> {
    write_tar(&[
        RawEntry::file("a", &noise(5 * 1024 * 1024, seed)),
        RawEntry::file("b", &noise(4 * 1024 * 1024, seed + 1)),
    ])
}

async fn verify_problems(store: &Arc<dyn Store>, read_data: bool) -> Vec<String> {
    let report = verify::verify(store, &[], read_data, 4, &Arc::new(Progress::default())).await.unwrap();
    report.problems.iter().map(|p| format!("{}: {}", p.object, p.detail)).collect()
}

/// Damages one chunk file of a local store with `damage`, then checks that verify (deep),
/// `fetch --tar` and `fetch --to` all fail naming that chunk, and that the target stays empty.
async fn damage_is_detected(what: &str, damage: impl Fn(&std::path::Path), structural: bool) {
    let work = tempfile::tempdir().unwrap();
    let local = LocalStore::open(work.path().join("store")).unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let report = import(&store, three_chunk_tar(7)).await;
    assert!(verify_problems(&store, true).await.is_empty(), "a fresh store verifies clean");
    let manifest = restore::read_manifest(&*store, &report.id).await.unwrap();
    let victim = manifest.chunks[1].digest;
    damage(&local.root().join(layout::chunk(&victim).as_str()));

    let problems = verify_problems(&store, true).await;
    assert_eq!(problems.len(), 1, "{what}: {problems:?}");
    assert!(problems[0].contains(&victim.to_string()), "{what}: {problems:?}");
    if structural {
        let shallow = verify_problems(&store, false).await;
        assert!(shallow.iter().any(|p| p.contains(&victim.to_string())), "{what}: structure check missed it");
    }
    let err = fetch_bytes(&store, &report.id).await.unwrap_err();
    assert!(err.to_string().contains(&victim.to_string()), "{what}: {err}");
    let target = work.path().join("out");
    let err = fetch_dir(&store, &report.id, &target).await.unwrap_err();
    assert!(err.to_string().contains(&victim.to_string()), "{what}: {err}");
    assert!(!target.exists(), "{what}: a failed fetch left the target behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_is_detected() {
    damage_is_detected(
        "flipped byte",
        |path| {
            let mut bytes = std::fs::read(path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            std::fs::write(path, bytes).unwrap();
        },
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_chunk_is_detected() {
    damage_is_detected(
        "truncated",
        |path| {
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
        },
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_chunk_is_detected() {
    damage_is_detected("deleted", |path| std::fs::remove_file(path).unwrap(), true).await;
}

/// A chunk file replaced by a symlink, even to an identical copy outside the store, is
/// refused: the store reads only its own regular files.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_replaced_by_a_symlink_is_not_followed() {
    let work = tempfile::tempdir().unwrap();
    let local = LocalStore::open(work.path().join("store")).unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let report = import(&store, three_chunk_tar(9)).await;
    let manifest = restore::read_manifest(&*store, &report.id).await.unwrap();
    let victim = manifest.chunks[0].digest;
    let file = local.root().join(layout::chunk(&victim).as_str());
    let outside = work.path().join("outside-copy");
    std::fs::rename(&file, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &file).unwrap();
    let err = store.get(&layout::chunk(&victim), u64::MAX).await.unwrap_err();
    assert!(!err.is_not_found(), "a symlink is not a miss: {err}");
    let err = fetch_bytes(&store, &report.id).await.unwrap_err();
    assert!(err.to_string().contains(&victim.hex()), "{err}");
    let err = store.head(&layout::chunk(&victim)).await.unwrap_err();
    assert!(err.is_damage() && err.to_string().contains("symbolic link"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_manifest_is_detected() {
    let work = tempfile::tempdir().unwrap();
    let local = LocalStore::open(work.path().join("store")).unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let report = import(&store, three_chunk_tar(1)).await;
    let path = local.root().join(layout::snapshot(&report.id).as_str());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let problems = verify_problems(&store, false).await;
    assert!(problems.len() == 1 && problems[0].contains("hash"), "{problems:?}");
    assert!(fetch_bytes(&store, &report.id).await.unwrap_err().to_string().contains("invalid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_what_is_reachable_and_removes_what_is_not() {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let kept = import(&dyn_store, three_chunk_tar(10)).await;
    let doomed = import(&dyn_store, three_chunk_tar(20)).await;
    // Shares nothing with `kept`; drop its manifest, as an interrupted import would leave it.
    let doomed_manifest = restore::read_manifest(&*dyn_store, &doomed.id).await.unwrap();
    dyn_store.delete(&layout::snapshot(&doomed.id)).await.unwrap();
    let long_ago = SystemTime::now() - Duration::from_hours(3);
    for meta in dyn_store.list(layout::CHUNKS).await.unwrap() {
        store.set_modified(&meta.path, long_ago);
    }
    let options = |dry_run, grace| GcOptions { grace, dry_run, concurrency: 4 };

    let dry = gc::gc(&dyn_store, options(true, Duration::from_hours(1))).await.unwrap();
    assert_eq!(dry.removed_chunks, doomed_manifest.unique_chunks().len());
    assert_eq!(
        dyn_store.list(layout::CHUNKS).await.unwrap().len(),
        kept.unique_chunks + doomed.unique_chunks
    );

    let young = gc::gc(&dyn_store, options(false, Duration::from_hours(4))).await.unwrap();
    assert_eq!(young.removed_chunks, 0, "the grace period protects young chunks");
    assert_eq!(young.young_chunks, doomed_manifest.unique_chunks().len());

    let real = gc::gc(&dyn_store, options(false, Duration::from_hours(1))).await.unwrap();
    assert_eq!(real.removed_chunks, doomed_manifest.unique_chunks().len());
    assert_eq!(real.reachable_chunks, kept.unique_chunks);
    for chunk in doomed_manifest.unique_chunks() {
        assert!(dyn_store.head(&layout::chunk(&chunk.digest)).await.unwrap().is_none());
    }
    assert!(verify_problems(&dyn_store, true).await.is_empty(), "gc removed something reachable");
    assert!(fetch_bytes(&dyn_store, &kept.id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_never_runs_beside_a_writer() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let writer = envbuild_cache::lease::acquire_write(&store).await.unwrap();
    let err = gc::gc(&store, GcOptions { grace: Duration::ZERO, dry_run: false, concurrency: 1 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("writing to or collecting"), "{err}");
    writer.release().await;
    gc::gc(&store, GcOptions { grace: Duration::ZERO, dry_run: false, concurrency: 1 }).await.unwrap();
}

/// Damage a chunk (truncated, or one byte flipped at the same size), delete the manifest, and
/// import the same stream again: the import must not dedup against the damaged chunk. It
/// rewrites it from its input, which repairs the store, even when this host had recorded the
/// chunk as sound before the damage.
#[tokio::test(flavor = "multi_thread")]
async fn a_re_import_after_damage_repairs_the_chunk_instead_of_trusting_it() {
    use envbuild_cache::ingest::{self, IngestOptions};
    use envbuild_cache::verified::Verified;
    for damage in ["truncate", "flip"] {
        let work = tempfile::tempdir().unwrap();
        let local = LocalStore::open(work.path().join("store")).unwrap();
        let store: Arc<dyn Store> = Arc::new(local.clone());
        let record_dir = work.path().join("verified");
        let tar = three_chunk_tar(31);
        let import_recorded = |tar: Vec<u8>| {
            let store = store.clone();
            let verified = Arc::new(Verified::open(&record_dir, &store.location()));
            async move {
                let options = IngestOptions { verified, ..IngestOptions::default() };
                ingest::ingest(
                    store,
                    Box::new(std::io::Cursor::new(tar)),
                    options,
                    Arc::new(Progress::default()),
                )
                .await
                .unwrap()
            }
        };
        let first = import_recorded(tar.clone()).await;
        let manifest = restore::read_manifest(&*store, &first.id).await.unwrap();
        let file = local.root().join(layout::chunk(&manifest.chunks[1].digest).as_str());
        let mut bytes = std::fs::read(&file).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() - 10),
            _ => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
            }
        }
        std::fs::write(&file, &bytes).unwrap();
        std::fs::remove_file(local.root().join(layout::snapshot(&first.id).as_str())).unwrap();

        let again = import_recorded(tar.clone()).await;
        assert_eq!(again.id, first.id, "{damage}");
        assert_eq!(fetch_bytes(&store, &again.id).await.unwrap(), tar, "{damage}: the snapshot reads back");
        let report = verify::verify(&store, &[], true, 4, &Arc::new(Progress::default())).await.unwrap();
        assert!(report.problems.is_empty(), "{damage}: {:?}", report.problems);
    }
}

/// A writer's lease whose process of this host is gone is released at once, and gc runs; a
/// lease held elsewhere blocks gc with a message naming its holder and age.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_writers_lease_is_released_at_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let lease = |name: &str, host: &str, pid: u32| {
        let store = store.clone();
        let body = serde_json::json!({ "kind": "write", "host": host, "pid": pid }).to_string();
        let path = layout::lease(name).unwrap();
        async move { store.put(&path, body.into(), envbuild_cache::store::PutMode::Create).await.unwrap() }
    };
    lease("write-dead", &host, dead_pid).await;
    let options = GcOptions { grace: Duration::ZERO, dry_run: false, concurrency: 1 };
    gc::gc(&store, options).await.unwrap();
    assert!(store.head(&layout::lease("write-dead").unwrap()).await.unwrap().is_none(), "released");
    lease("write-elsewhere", "another-host", 4242).await;
    let err = gc::gc(&store, options).await.unwrap_err().to_string();
    assert!(err.contains("process 4242 on another-host") && err.contains("ago"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_frame_digest_never_passes_other_bytes() {
    let work = tempfile::tempdir().unwrap();
    let local = LocalStore::open(work.path().join("store")).unwrap();
    let store: Arc<dyn Store> = Arc::new(local.clone());
    let report = import(&store, three_chunk_tar(11)).await;
    let manifest = restore::read_manifest(&*store, &report.id).await.unwrap();
    let chunk = manifest.chunks[1];
    // Learned by a full check, then served by hashing the stored object alone.
    let (stored, frame) = restore::fetch_stored_chunk_by_frame(&*store, &chunk, None).await.unwrap();
    let (again, same) = restore::fetch_stored_chunk_by_frame(&*store, &chunk, Some(frame)).await.unwrap();
    assert_eq!((again, same), (stored.clone(), frame));
    // A stale frame digest (a repair compressed differently) falls back to the full check.
    let stale = envbuild_cache::Digest::of(b"another object");
    let (repaired, learned) =
        restore::fetch_stored_chunk_by_frame(&*store, &chunk, Some(stale)).await.unwrap();
    assert_eq!((repaired, learned), (stored.clone(), frame));
    // The same size, one byte flipped: refused whatever frame digest is known.
    let path = local.root().join(layout::chunk(&chunk.digest).as_str());
    let mut bytes = stored.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    for known in [Some(frame), None] {
        let err = restore::fetch_stored_chunk_by_frame(&*store, &chunk, known).await.unwrap_err();
        assert!(err.to_string().contains(&chunk.digest.hex()[..12]), "{err}");
    }
}
