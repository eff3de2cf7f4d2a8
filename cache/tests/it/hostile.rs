//! Hostile streams: whatever a snapshot holds, `fetch --to` writes nothing outside the target,
//! follows no symlink, refuses the entry with a clear error, and leaves nothing at the target.

use std::path::Path;

use envbuild_cache::testing::{RawEntry, write_tar};

use super::{fetch_dir, import, local_store};

/// Every file under `dir`, for checking that nothing appeared.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            out.push(entry.path().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

async fn assert_contained(name: &str, entries: Vec<RawEntry>, expect: &str) {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    // Targets an escape would hit: siblings of the restore directory, and a file to overwrite.
    let arena = work.path().join("arena");
    std::fs::create_dir_all(arena.join("outside")).unwrap();
    std::fs::write(arena.join("victim"), b"original").unwrap();
    let before = listing(&arena);
    // Import refuses such names; a hostile writer (or an older envbuild) could still store them.
    let report = super::import_unchecked(&store, write_tar(&entries)).await;
    let target = arena.join("restore");
    let err = fetch_dir(&store, &report.id, &target).await.expect_err(name);
    let message = err.to_string();
    assert!(message.contains(expect), "{name}: the error `{message}` does not say `{expect}`");
    assert!(!target.exists(), "{name}: a failed fetch left `{}` behind", target.display());
    assert_eq!(listing(&arena), before, "{name}: something was written outside the target");
    assert_eq!(std::fs::read(arena.join("victim")).unwrap(), b"original", "{name}: the victim file changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_dot_components_are_refused() {
    assert_contained("..", vec![RawEntry::file("../victim", b"pwned")], "`..` component").await;
    assert_contained(
        "nested ..",
        vec![RawEntry::dir("a"), RawEntry::file("a/../../victim", b"x")],
        "`..` component",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_paths_are_refused() {
    assert_contained("absolute", vec![RawEntry::file("/tmp/envbuild-pwned", b"x")], "absolute path").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_through_symlinks_are_refused() {
    assert_contained(
        "symlink to parent",
        vec![RawEntry::symlink("up", ".."), RawEntry::file("up/victim", b"pwned")],
        "never follows links",
    )
    .await;
    assert_contained(
        "symlink to absolute",
        vec![RawEntry::symlink("etc", "/etc"), RawEntry::file("etc/envbuild-pwned", b"x")],
        "never follows links",
    )
    .await;
    assert_contained(
        "symlink inside the tree",
        vec![RawEntry::dir("real"), RawEntry::symlink("s", "real"), RawEntry::file("s/file", b"x")],
        "never follows links",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chains_of_symlinks_are_refused() {
    assert_contained(
        "chain",
        vec![
            RawEntry::symlink("a", "b"),
            RawEntry::symlink("b", "../.."),
            RawEntry::file("a/x/victim", b"x"),
        ],
        "never follows links",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hard_links_out_of_the_tree_are_refused() {
    assert_contained("hardlink ..", vec![RawEntry::hardlink("h", "../victim")], "`..` component").await;
    assert_contained("hardlink absolute", vec![RawEntry::hardlink("h", "/etc/passwd")], "absolute path")
        .await;
    assert_contained("hardlink to nothing", vec![RawEntry::hardlink("h", "missing")], "not in the snapshot")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_cannot_become_a_directory() {
    assert_contained(
        "file as dir",
        vec![RawEntry::file("f", b"x"), RawEntry::file("f/g", b"y")],
        "not a directory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn harmless_links_are_kept_exactly() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    let entries = vec![
        RawEntry::dir("bin"),
        RawEntry::file("bin/busybox", b"elf"),
        RawEntry::hardlink("bin/sh", "bin/busybox"),
        RawEntry::symlink("etc-passwd", "/etc/passwd"),
        RawEntry::symlink("up", "../../outside"),
    ];
    let report = import(&store, write_tar(&entries)).await;
    let target = work.path().join("restore");
    fetch_dir(&store, &report.id, &target).await.unwrap();
    assert_eq!(std::fs::read_link(target.join("etc-passwd")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(std::fs::read_link(target.join("up")).unwrap(), Path::new("../../outside"));
    assert_eq!(std::fs::read(target.join("bin/sh")).unwrap(), b"elf");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_before_its_target_is_made_at_the_end() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    // Canonical order puts `a-link` before `z-target`.
    let entries = vec![RawEntry::hardlink("a-link", "z-target"), RawEntry::file("z-target", b"data")];
    let report = import(&store, write_tar(&entries)).await;
    let target = work.path().join("restore");
    let extracted = fetch_dir(&store, &report.id, &target).await.unwrap();
    assert_eq!(extracted.hardlinks, 1);
    assert_eq!(std::fs::read(target.join("a-link")).unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_not_a_tar() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    let err = super::try_import(&store, super::noise(100_000, 3)).await.unwrap_err();
    assert!(err.to_string().contains("not a valid tar stream"), "{err}");
    let mut truncated = write_tar(&[RawEntry::file("f", &super::noise(10_000, 4))]);
    truncated.truncate(3000);
    let err = super::try_import(&store, truncated).await.unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
    assert!(
        envbuild_cache::catalog::list_snapshots(&*store).await.unwrap().is_empty(),
        "nothing may be published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_at_an_entry_boundary_or_empty_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    let entries: Vec<RawEntry> =
        (0..8).map(|i| RawEntry::file(&format!("f{i}"), &super::noise(4096 * (i + 1), i as u64))).collect();
    let whole = write_tar(&entries);
    // Cut exactly after the fourth entry's data: every header so far is whole, but the rest
    // of the file system (and the end marker) is missing.
    let cut = whole.len() - 1024 - (5..=8).map(|i| 512 + 4096 * i).sum::<usize>();
    let err = super::try_import(&store, whole[..cut].to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("without its end-of-archive marker"), "{err}");
    let err = super::try_import(&store, Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("end-of-archive marker"), "empty input: {err}");
    let err = super::try_import(&store, vec![0; 1024]).await.unwrap_err();
    assert!(err.to_string().contains("holds no entries"), "{err}");
    // Out of canonical order and cut short: the reordering path refuses it too.
    let mut reversed = entries.clone();
    reversed.reverse();
    let whole = write_tar(&reversed);
    let err = super::try_import(&store, whole[..whole.len() - 1024].to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("end-of-archive marker"), "{err}");
    assert!(envbuild_cache::catalog::list_snapshots(&*store).await.unwrap().is_empty(), "nothing published");
    super::import(&store, write_tar(&entries)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_leave_the_root_are_refused_at_import() {
    let work = tempfile::tempdir().unwrap();
    let store = local_store(&work.path().join("store"));
    for (entries, expect) in [
        (vec![RawEntry::file("../victim", b"x")], "`..` component"),
        (vec![RawEntry::dir("a/"), RawEntry::file("a/../../b", b"x")], "`..` component"),
        (vec![RawEntry::file("/etc/passwd", b"x")], "absolute path"),
        (vec![RawEntry::file("a", b"x"), RawEntry::hardlink("b", "../../etc/shadow")], "hard link's target"),
    ] {
        let err = super::try_import(&store, write_tar(&entries)).await.unwrap_err();
        assert!(err.to_string().contains(expect), "{entries:?}: {err}");
    }
    assert!(envbuild_cache::catalog::list_snapshots(&*store).await.unwrap().is_empty(), "nothing published");
}
