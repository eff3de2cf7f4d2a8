//! Input out of canonical order is put in order first, whatever the size and wherever the
//! disorder starts, and the result is the snapshot the ordered input would give.

use envbuild_cache::testing::{RawEntry, write_tar};

use super::{fetch_bytes, import, local_store, noise};

fn entries(seed: u64) -> Vec<RawEntry> {
    vec![
        RawEntry::dir("a"),
        RawEntry::file("a/big", &noise(6 * 1024 * 1024, seed)),
        RawEntry::dir("a/z"),
        RawEntry::file("a/z/leaf", b"leaf"),
        RawEntry::file("a.txt", b"after a/ in canonical order"),
        RawEntry::file("b", &noise(5 * 1024 * 1024, seed + 1)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffled_input_gives_the_canonical_snapshot() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(work.path());
    let canonical = write_tar(&entries(1));
    let ordered = import(&store, canonical.clone()).await;
    assert!(!ordered.reordered);

    // Disorder late in the stream, after several chunks went to the store.
    let mut late = entries(1);
    late.swap(4, 5);
    // Disorder at the start, and a whole-path sort (`a.txt` before `a/...`), as `sort` would do.
    let mut whole_path_sort = entries(1);
    whole_path_sort.sort_by(|x, y| x.path.cmp(&y.path));
    for shuffled in [late, whole_path_sort, entries(1).into_iter().rev().collect()] {
        let report = import(&store, write_tar(&shuffled)).await;
        assert!(report.reordered);
        assert_eq!(report.id, ordered.id, "reordering must give the canonical snapshot");
        assert_eq!(fetch_bytes(&store, &report.id).await.unwrap(), canonical);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_path_keeps_its_last_version() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(work.path());
    let twice =
        vec![RawEntry::file("f", b"first"), RawEntry::file("g", b"g"), RawEntry::file("f", b"second")];
    let report = import(&store, write_tar(&twice)).await;
    assert!(report.reordered);
    let expected = write_tar(&[RawEntry::file("f", b"second"), RawEntry::file("g", b"g")]);
    assert_eq!(fetch_bytes(&store, &report.id).await.unwrap(), expected);
}
