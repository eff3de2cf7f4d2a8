//! One file read out of a snapshot from only the chunks that hold it: small files between big
//! ones (so across chunk boundaries), a long name behind a PAX header, and what is not a
//! regular file or is over the limit.

use envbuild_cache::restore;
use envbuild_cache::testing::{RawEntry, write_tar};

use super::{import, local_store, noise};

#[tokio::test]
async fn files_are_read_from_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let long_name = format!("opt/{}/config.toml", "deep".repeat(40));
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n".to_vec();
    // Longer than the largest chunk (4 MiB), so it crosses a boundary whatever the bytes.
    let straddling = noise(5 * 1024 * 1024, 9);
    let tar = write_tar(&[
        RawEntry::file("a/big1.bin", &noise(3 * 1024 * 1024, 1)),
        RawEntry::dir("etc"),
        RawEntry::file("etc/group", b"root:x:0:\nagent:x:1000:\n"),
        RawEntry::file("etc/passwd", &passwd),
        RawEntry::symlink("etc/mtab", "/proc/mounts"),
        RawEntry::file(&long_name, b"answer = 42\n"),
        RawEntry::file("m/big2.bin", &noise(2 * 1024 * 1024, 2)),
        RawEntry::file("m/straddling.bin", &straddling),
        RawEntry::file("z/big3.bin", &noise(2 * 1024 * 1024, 3)),
    ]);
    let id = import(&store, tar).await.id;
    let manifest = restore::read_manifest(&*store, &id).await.unwrap();
    let boundaries: Vec<u64> = manifest
        .chunks
        .iter()
        .scan(0, |end, c| {
            *end += c.size;
            Some(*end)
        })
        .collect();
    let straddles = |path: &str| {
        let e = manifest.toc.iter().find(|e| e.path == path).unwrap();
        boundaries.iter().any(|&b| b > e.offset && b < e.offset + 512 + e.size)
    };
    assert!(straddles("m/straddling.bin"), "a file longer than the largest chunk crosses a boundary");

    let read = |path: &str, max: u64| {
        let (store, manifest) = (store.clone(), manifest.clone());
        let path = path.to_owned();
        async move { restore::read_file(&*store, &manifest, &path, max).await.unwrap() }
    };
    assert_eq!(read("etc/passwd", 1 << 20).await.as_deref(), Some(&passwd[..]));
    assert_eq!(read("etc/group", 1 << 20).await.as_deref(), Some(&b"root:x:0:\nagent:x:1000:\n"[..]));
    assert_eq!(read(&long_name, 1 << 20).await.as_deref(), Some(&b"answer = 42\n"[..]));
    assert_eq!(read("m/straddling.bin", 8 << 20).await.as_deref(), Some(&straddling[..]));
    assert_eq!(read("etc/mtab", 1 << 20).await, None, "a symlink is not read");
    assert_eq!(read("etc/shadow", 1 << 20).await, None);
    assert_eq!(read("m/straddling.bin", 1024).await, None, "over the limit");
}
