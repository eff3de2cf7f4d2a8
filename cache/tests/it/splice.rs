//! A snapshot spliced from its parent and the changed paths is exactly the snapshot of the
//! whole new stream (same id, same bytes), built while reading only the parent's chunks around
//! the changes. The whole new stream is made here independently, as a map of entries.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use envbuild_cache::chunker::ChunkParams;
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, Progress};
use envbuild_cache::splice::{self, Part, Take};
use envbuild_cache::store::counting::Counting;
use envbuild_cache::store::memory::MemoryStore;
use envbuild_cache::tar::{self, CanonicalKey, TarReader};
use envbuild_cache::testing::{RawEntry, write_tar};
use envbuild_cache::verified::Verified;
use envbuild_cache::{Error, Store, restore};

use crate::{fetch_bytes, noise};

/// Small chunks, so a stream of a few MB has hundreds of them.
fn params() -> ChunkParams {
    ChunkParams::new(1024, 4096, 16 * 1024).unwrap()
}

/// Small chunks, and one record of verified chunks per store, as a host keeps: what one ingest
/// wrote, the next knows sound without reading it back.
fn options(store: &Arc<dyn Store>) -> IngestOptions {
    static RECORDS: std::sync::Mutex<Vec<(usize, Arc<Verified>)>> = std::sync::Mutex::new(Vec::new());
    let key = Arc::as_ptr(store).cast::<()>() as usize;
    let mut records = RECORDS.lock().unwrap();
    let verified = match records.iter().find(|(k, _)| *k == key) {
        Some((_, verified)) => verified.clone(),
        None => {
            let verified = Arc::new(Verified::in_memory());
            records.push((key, verified.clone()));
            verified
        }
    };
    IngestOptions { params: params(), verified, ..IngestOptions::default() }
}

fn sorted(mut entries: Vec<RawEntry>) -> Vec<RawEntry> {
    entries.sort_by_key(|e| tar::canonical_key(&e.path));
    entries
}

/// A root file system of about 3 MB: directories of files of varied sizes, a symlink and a
/// hard link.
fn parent_tree() -> Vec<RawEntry> {
    let mut entries = vec![RawEntry::dir("usr/"), RawEntry::dir("workspace/")];
    for d in 0..8 {
        entries.push(RawEntry::dir(&format!("workspace/d{d}/")));
        for f in 0..12 {
            let size = (d * 12 + f) * 2711 % 60_000;
            entries
                .push(RawEntry::file(&format!("workspace/d{d}/f{f:02}"), &noise(size, (d * 100 + f) as u64)));
        }
    }
    entries.push(RawEntry::dir("workspace/d5/sub/"));
    entries.push(RawEntry::file("workspace/d5/sub/deep", b"deep"));
    entries.push(RawEntry::file("usr/tool", &noise(40_000, 7)));
    entries.push(RawEntry::hardlink("usr/tool-link", "usr/tool"));
    entries.push(RawEntry::symlink("usr/latest", "tool"));
    sorted(entries)
}

/// One changed path: its archive's entries (names starting with the path's last component),
/// or `None` for a path that is gone.
struct Change {
    path: &'static str,
    take: Take,
    archive: Option<Vec<RawEntry>>,
}

fn archive_bytes(entries: &[RawEntry]) -> Vec<u8> {
    write_tar(&sorted(entries.to_vec()))
}

/// The new stream as the map of entries says it must be: the parent's entries' bytes, the
/// changes applied, the new entries written by `encode_header`, then the parent's trailer.
fn expected_stream(parent: &[u8], changes: &[Change]) -> Vec<u8> {
    let mut entries: BTreeMap<CanonicalKey, Vec<u8>> = BTreeMap::new();
    let mut reader = TarReader::new(parent);
    let mut spans = Vec::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        spans.push((tar::canonical_key(&entry.path), entry.offset, entry.data_offset + entry.size));
    }
    let at = |offset: u64| usize::try_from(offset).unwrap();
    let entries_end = spans.last().map_or(0, |s| s.2.next_multiple_of(512));
    for (i, (key, start, _)) in spans.iter().enumerate() {
        let end = spans.get(i + 1).map_or(entries_end, |s| s.1);
        entries.insert(key.clone(), parent[at(*start)..at(end)].to_vec());
    }
    let under = |key: &CanonicalKey, root: &CanonicalKey| {
        key.len() > root.len() && key.starts_with(root) && key[root.len()] == 0
    };
    for change in changes {
        let root = tar::canonical_key(change.path.as_bytes());
        let base_dir = change.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut new = Vec::new();
        if let Some(archive) = &change.archive {
            let bytes = archive_bytes(archive);
            let mut reader = TarReader::new(bytes.as_slice());
            while let Some(mut entry) = reader.next_entry().unwrap() {
                let name = tar::display_path(&entry.path);
                entry.path =
                    if base_dir.is_empty() { name } else { [base_dir.as_bytes(), b"/", &name].concat() };
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = reader.read_data(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let mut bytes = tar::encode_header(&entry);
                bytes.extend_from_slice(&data);
                bytes.resize(bytes.len() + tar::padding(data.len() as u64), 0);
                new.push((tar::canonical_key(&entry.path), entry.kind, bytes));
                if change.take == Take::Entry {
                    break;
                }
            }
        }
        let replaces_dir = new.first().is_some_and(|(_, kind, _)| *kind == tar::EntryKind::Directory);
        entries.remove(&root);
        if change.take == Take::Subtree || !replaces_dir {
            entries.retain(|key, _| !under(key, &root));
        }
        for (key, _, bytes) in new {
            entries.insert(key, bytes);
        }
    }
    let mut out: Vec<u8> = entries.into_values().flatten().collect();
    out.extend_from_slice(&parent[at(entries_end)..]);
    out
}

fn parts(changes: &[Change]) -> Vec<Part> {
    changes
        .iter()
        .map(|change| {
            let archive = change.archive.as_ref().map(|entries| archive_bytes(entries));
            Part {
                path: change.path.to_owned(),
                take: change.take,
                open: Box::new(move || {
                    Ok(archive.map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read + Send>))
                }),
            }
        })
        .collect()
}

async fn ingest_bytes(store: &Arc<dyn Store>, stream: Vec<u8>) -> IngestReport {
    ingest::ingest(
        store.clone(),
        Box::new(std::io::Cursor::new(stream)),
        options(store),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap()
}

async fn splice_onto(
    store: &Arc<dyn Store>,
    parent: &IngestReport,
    changes: &[Change],
) -> envbuild_cache::Result<IngestReport> {
    let manifest = Arc::new(restore::read_manifest(&**store, &parent.id).await?);
    splice::ingest_onto(
        store.clone(),
        manifest,
        parts(changes),
        options(store),
        Arc::new(Progress::default()),
    )
    .await
}

fn file(name: &str, data: &[u8]) -> RawEntry {
    RawEntry::file(name, data)
}

fn dir(name: &str, mtime: u64) -> RawEntry {
    RawEntry { mtime, ..RawEntry::dir(name) }
}

/// The changes of a typical install: a directory's header, a file rewritten, a directory added
/// between existing ones, a subtree replaced, a path removed, a directory become a file, and a
/// file appended at the very end of the stream.
fn typical_changes() -> Vec<Change> {
    vec![
        Change {
            path: "workspace",
            take: Take::Entry,
            archive: Some(vec![dir("workspace/", 1_800_000_000)]),
        },
        Change {
            path: "workspace/d1/f03",
            take: Take::Entry,
            archive: Some(vec![file("f03", &noise(9000, 42))]),
        },
        Change {
            path: "workspace/d2zod",
            take: Take::Subtree,
            archive: Some(vec![
                dir("d2zod/", 1),
                file("d2zod/index.js", &noise(30_000, 43)),
                file("d2zod/package.json", b"{}"),
            ]),
        },
        Change {
            path: "workspace/d3",
            take: Take::Subtree,
            archive: Some(vec![
                dir("d3/", 2),
                file("d3/f00", &noise(100, 44)),
                file("d3/zzz", &noise(5000, 45)),
            ]),
        },
        Change { path: "workspace/d4", take: Take::Subtree, archive: None },
        Change { path: "workspace/d5", take: Take::Entry, archive: Some(vec![file("d5", b"now a file")]) },
        Change {
            path: "workspace/zlast",
            take: Take::Subtree,
            archive: Some(vec![file("zlast", &noise(20_000, 46))]),
        },
    ]
}

#[tokio::test]
async fn a_spliced_snapshot_is_the_snapshot_of_the_whole_new_stream() {
    let counting = Arc::new(Counting::new(MemoryStore::new()));
    let store: Arc<dyn Store> = counting.clone();
    let parent_stream = write_tar(&parent_tree());
    let parent = ingest_bytes(&store, parent_stream.clone()).await;
    assert!(parent.chunks > 200, "the parent has {} chunks", parent.chunks);

    let changes = typical_changes();
    let reads_before = counting.with(|c| c.gets.values().sum::<u64>());
    let spliced = splice_onto(&store, &parent, &changes).await.unwrap();
    let reads = counting.with(|c| c.gets.values().sum::<u64>()) - reads_before;

    let expected = expected_stream(&parent_stream, &changes);
    assert_eq!(
        fetch_bytes(&store, &spliced.id).await.unwrap(),
        expected,
        "the spliced stream, byte for byte"
    );
    // The whole stream ingested from scratch, in a store of its own, gets the same id.
    let fresh: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let whole = ingest_bytes(&fresh, expected).await;
    assert_eq!(spliced.id, whole.id, "same chunks, same table of contents, same id");
    // Seven changes cost a few chunks each; most of the parent was never read.
    assert!(
        reads < parent.chunks as u64 / 4,
        "the splice read {reads} objects of a parent of {} chunks",
        parent.chunks
    );
    assert!(spliced.new_chunks < parent.chunks / 4, "{} new chunks", spliced.new_chunks);
}

#[tokio::test]
async fn no_changes_give_the_parent_and_a_change_at_the_start_still_resynchronizes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let parent_stream = write_tar(&parent_tree());
    let parent = ingest_bytes(&store, parent_stream.clone()).await;
    let same = splice_onto(&store, &parent, &[]).await.unwrap();
    assert_eq!(same.id, parent.id);
    assert_eq!(same.new_chunks, 0);

    let changes = vec![Change {
        path: "a-first",
        take: Take::Subtree,
        archive: Some(vec![file("a-first", &noise(3000, 9))]),
    }];
    let spliced = splice_onto(&store, &parent, &changes).await.unwrap();
    let whole = ingest_bytes(
        &(Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        expected_stream(&parent_stream, &changes),
    )
    .await;
    assert_eq!(spliced.id, whole.id);
    assert!(
        spliced.new_chunks < 10,
        "an insertion at the start re-cuts a few chunks, not {}",
        spliced.new_chunks
    );
}

#[tokio::test]
async fn changes_that_cannot_be_spliced_are_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let parent = ingest_bytes(&store, write_tar(&parent_tree())).await;
    let refused = |changes: Vec<Change>| {
        let store = store.clone();
        let parent = parent.clone();
        async move {
            match splice_onto(&store, &parent, &changes).await {
                Err(Error::NotSpliceable(why)) => why,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    // The hard link `usr/tool-link` would name new bytes.
    let why = refused(vec![Change {
        path: "usr/tool",
        take: Take::Entry,
        archive: Some(vec![file("tool", b"new")]),
    }])
    .await;
    assert!(why.contains("hard link"), "{why}");
    // An archive holding names outside its path.
    let why = refused(vec![Change {
        path: "workspace/d1",
        take: Take::Subtree,
        archive: Some(vec![dir("d1/", 1), file("other/x", b"x")]),
    }])
    .await;
    assert!(why.contains("outside"), "{why}");
    let why = refused(vec![Change {
        path: "workspace/d1",
        take: Take::Subtree,
        archive: Some(vec![file("d1/../../etc/passwd", b"x")]),
    }])
    .await;
    assert!(why.contains("climbs out") || why.contains("out of place"), "{why}");
    // Parts out of order, or inside a subtree part.
    let why = refused(vec![
        Change { path: "workspace/d2", take: Take::Subtree, archive: None },
        Change { path: "workspace/d1", take: Take::Subtree, archive: None },
    ])
    .await;
    assert!(why.contains("out of order"), "{why}");
    let why = refused(vec![
        Change { path: "workspace/d2", take: Take::Subtree, archive: None },
        Change { path: "workspace/d2/f01", take: Take::Entry, archive: None },
    ])
    .await;
    assert!(why.contains("inside another"), "{why}");
}

#[tokio::test]
async fn a_damaged_parent_chunk_fails_the_splice() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let parent = ingest_bytes(&store, write_tar(&parent_tree())).await;
    let manifest = restore::read_manifest(&*store, &parent.id).await.unwrap();
    // Damage the chunk that holds `workspace/d1/f03`, which the splice must read.
    let entry = manifest.toc.iter().find(|e| e.path == "workspace/d1/f03").unwrap();
    let mut at = 0;
    let chunk = manifest
        .chunks
        .iter()
        .find(|c| {
            at += c.size;
            at > entry.offset
        })
        .unwrap();
    let path = envbuild_cache::layout::chunk(&chunk.digest);
    let stored = store.get(&path, 1 << 20).await.unwrap().bytes;
    let mut damaged = stored.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    store.put(&path, damaged.into(), envbuild_cache::store::PutMode::Overwrite).await.unwrap();
    let changes =
        vec![Change { path: "workspace/d1/f03", take: Take::Entry, archive: Some(vec![file("f03", b"x")]) }];
    let err = splice_onto(&store, &parent, &changes).await.unwrap_err();
    assert!(err.to_string().contains(&chunk.digest.to_string()), "{err}");
}

#[tokio::test]
async fn a_snapshot_stores_only_the_table_of_contents_chunks_around_a_change() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut entries = vec![RawEntry::dir("usr/")];
    for i in 0..8000 {
        entries.push(RawEntry::file(&format!("usr/file-{i:05}"), format!("content {i}").as_bytes()));
    }
    let parent_stream = write_tar(&sorted(entries));
    let parent = ingest_bytes(&store, parent_stream.clone()).await;
    let changes = vec![Change {
        path: "usr/file-03000",
        take: Take::Entry,
        archive: Some(vec![file("file-03000", &noise(70_000, 5))]),
    }];
    let child = ingest_bytes(&store, expected_stream(&parent_stream, &changes)).await;
    let table = |id| {
        let store = store.clone();
        async move { restore::read_manifest_shallow(&*store, &id).await.unwrap().toc_ref.unwrap().chunks }
    };
    let (before, after) = (table(parent.id).await, table(child.id).await);
    assert!(before.len() > 10, "the table has {} chunks", before.len());
    let new = after.iter().filter(|c| !before.contains(c)).count();
    assert!(new <= 2, "{new} of {} table chunks are new, though one entry changed", after.len());
    // The entries after the change moved by 70 KB; their lines did not change.
    let full = restore::read_manifest(&*store, &child.id).await.unwrap();
    assert_eq!(full.toc.len(), 8001);
    let moved = full.toc.iter().find(|e| e.path == "usr/file-07999").unwrap();
    let old = restore::read_manifest(&*store, &parent.id).await.unwrap();
    assert!(moved.offset > old.toc.iter().find(|e| e.path == "usr/file-07999").unwrap().offset);
}
