//! What an incremental install changed, as the parts of a splice onto its parent (see
//! `envbuild_cache::splice`): the export of an incremental build, in proportion to the change.
//!
//! The engine lists the paths the install container changed (`docker diff`: every path of the
//! container's own layer, the contents of added directories too). Reading one path from the
//! engine (`docker cp`'s archive endpoint) costs about 40 ms on Docker 20.10 whatever its size,
//! since the daemon re-executes itself in a chroot for each read; a full `docker export`
//! streams about 250 MB/s. So [`plan`] decides, directory by directory, between reading each
//! changed path under a directory and reading the directory whole, counting a read as
//! [`READ_COST`] bytes of streaming, and each unchanged byte read again as [`REREAD_WEIGHT`]
//! bytes: its entries come back with headers in envbuild's style rather than the parent's
//! (`tar::encode_header`), so what is read again is also stored again. When even the cheapest
//! plan costs more than exporting the whole file system, there is no plan and the caller
//! exports.
//!
//! Paths at or under the container's mounts (the package caches, the secrets tmpfs) are not
//! the container's layer: they are left as the parent has them, and no directory above one is
//! read whole (its archive would include the mount's contents).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use envbuild_builder::engine::{ChangeKind, ContainerEngine, FileChange};
use envbuild_cache::manifest::Manifest;
use envbuild_cache::splice::{Part, Take};
use envbuild_cache::tar::{self, CanonicalKey};

/// One read of a path, in bytes of streaming it costs as much time as (40 ms at 250 MB/s,
/// measured on Docker 20.10 with overlay2).
pub const READ_COST: u64 = 10 << 20;
/// What a byte of the parent read again costs, in bytes of streaming: the time, and storing
/// it again (about a third of a byte, compressed) weighed as the scarcer resource.
pub const REREAD_WEIGHT: u64 = 10;

/// Why the changes are exported whole instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoPlan(pub String);

/// The reads a splice makes, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub parts: Vec<(String, Take)>,
    /// The plan's cost in bytes of streaming, reads included.
    pub cost: u64,
}

/// One path of the tree of changes.
#[derive(Debug, Default)]
struct Node {
    kind: Option<ChangeKind>,
    /// Whether a mount is at or under this path.
    holds_mount: bool,
    children: BTreeMap<Vec<u8>, Node>,
}

/// The cheapest set of reads that covers `changes` (see the module docs), against the parent's
/// table of contents; with `always`, even when it costs more than exporting everything.
pub fn plan(
    changes: &[FileChange],
    parent: &Manifest,
    mounts: &[&str],
    always: bool,
) -> Result<Plan, NoPlan> {
    let mut root = Node::default();
    for mount in mounts {
        let mut node = &mut root;
        node.holds_mount = true;
        for component in mount.trim_matches('/').split('/') {
            node = node.children.entry(component.as_bytes().to_vec()).or_default();
            node.holds_mount = true;
        }
    }
    let mount_keys: Vec<CanonicalKey> = mounts.iter().map(|m| tar::canonical_key(m.as_bytes())).collect();
    for change in changes {
        let path = change.path.trim_start_matches('/');
        if path.is_empty() {
            continue;
        }
        if path.contains('\u{FFFD}') {
            return Err(NoPlan(format!("the engine reported a path that is not UTF-8 (`{}`)", change.path)));
        }
        if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(NoPlan(format!("the engine reported an unusual path (`{}`)", change.path)));
        }
        let key = tar::canonical_key(path.as_bytes());
        if mount_keys.iter().any(|m| is_under(&key, m)) {
            continue;
        }
        let mut node = &mut root;
        for component in path.split('/') {
            node = node.children.entry(component.as_bytes().to_vec()).or_default();
        }
        if node.holds_mount && change.kind != ChangeKind::Modified {
            return Err(NoPlan(format!(
                "`{}`, which is or holds a mount point, was added or removed",
                change.path
            )));
        }
        if mount_keys.contains(&key) {
            // A mount point's own entry stays as the parent has it: the engine would read the
            // mounted file system's root instead.
            continue;
        }
        node.kind = Some(change.kind);
    }
    let sizes = SubtreeSizes::new(parent);
    let mut out = Plan::default();
    for (name, child) in &root.children {
        let (cost, parts) = cheapest(child, &String::from_utf8_lossy(name), &sizes);
        out.cost += cost;
        out.parts.extend(parts);
    }
    if !always && out.cost >= parent.size {
        return Err(NoPlan(format!(
            "{} paths changed, and reading them costs about as much as exporting everything (set {}=changes to read them anyway)",
            changes.len(),
            crate::env::EXPORT
        )));
    }
    Ok(out)
}

/// The cheapest reads for the changes at and under `path`, with their cost.
fn cheapest(node: &Node, path: &str, sizes: &SubtreeSizes) -> (u64, Vec<(String, Take)>) {
    match node.kind {
        // Everything under an added path is new, and a removed one is read to see whether
        // something replaced it: one read of the whole, whatever else changed under it.
        Some(ChangeKind::Added | ChangeKind::Deleted) => (READ_COST, vec![(path.to_owned(), Take::Subtree)]),
        Some(ChangeKind::Modified) | None => {
            let mut cost = 0;
            let mut parts = Vec::new();
            if node.kind == Some(ChangeKind::Modified) {
                cost += READ_COST;
                parts.push((path.to_owned(), Take::Entry));
            }
            for (name, child) in &node.children {
                let (c, p) = cheapest(child, &format!("{path}/{}", String::from_utf8_lossy(name)), sizes);
                cost += c;
                parts.extend(p);
            }
            if !node.holds_mount {
                let whole = READ_COST + REREAD_WEIGHT * sizes.of(path);
                if whole < cost {
                    return (whole, vec![(path.to_owned(), Take::Subtree)]);
                }
            }
            (cost, parts)
        }
    }
}

/// Bytes of the parent's stream under each path.
struct SubtreeSizes<'a> {
    parent: &'a Manifest,
    keys: Vec<CanonicalKey>,
}

impl<'a> SubtreeSizes<'a> {
    fn new(parent: &'a Manifest) -> Self {
        Self { parent, keys: parent.toc.iter().map(|e| tar::canonical_key(e.path.as_bytes())).collect() }
    }

    /// The parent's bytes at and under `path` (0 where it has nothing).
    fn of(&self, path: &str) -> u64 {
        let key = tar::canonical_key(path.as_bytes());
        let start = self.keys.partition_point(|k| *k < key);
        let end = start + self.keys[start..].iter().take_while(|k| **k == key || is_under(k, &key)).count();
        let offset = |i: usize| self.parent.toc.get(i).map_or(self.parent.size, |e| e.offset);
        if start == end { 0 } else { offset(end).saturating_sub(offset(start)) }
    }
}

fn is_under(key: &[u8], root: &[u8]) -> bool {
    key.len() > root.len() && key.starts_with(root) && key[root.len()] == 0
}

/// The plan's parts, each reading its path from `container` when the splice gets to it.
/// Must be called inside the runtime.
pub fn parts(plan: Plan, engine: &Arc<dyn ContainerEngine>, container: &str) -> Vec<Part> {
    let handle = tokio::runtime::Handle::current();
    plan.parts
        .into_iter()
        .map(|(path, take)| {
            let (engine, container, handle) = (engine.clone(), container.to_owned(), handle.clone());
            let absolute = format!("/{path}");
            Part {
                path,
                take,
                open: Box::new(move || {
                    let _runtime = handle.enter();
                    let asked = std::time::Instant::now();
                    let archive = handle
                        .block_on(engine.archive(&container, &absolute))
                        .map_err(std::io::Error::other)?;
                    tracing::debug!("read `{absolute}` from the engine in {:?}", asked.elapsed());
                    Ok(archive
                        .map(|stream| Box::new(crate::bridge::stream_reader(stream)) as Box<dyn Read + Send>))
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envbuild_cache::manifest::{ChunkAlgorithm, Chunking, Compression, TocEntry, Zstd};
    use envbuild_cache::tar::EntryKind;

    /// A parent whose entries are `(path, bytes they take in the stream)`.
    fn parent(entries: &[(&str, u64)]) -> Manifest {
        let mut offset = 0;
        let toc = entries
            .iter()
            .map(|(path, size)| {
                let entry = TocEntry {
                    dev: None,
                    gid: 0,
                    hash: None,
                    link: None,
                    link_b64: None,
                    mode: 0o755,
                    mtime: 0,
                    offset,
                    path: (*path).to_owned(),
                    path_b64: None,
                    size: 0,
                    kind: EntryKind::Directory,
                    uid: 0,
                    xattrs: Vec::new(),
                };
                offset += size;
                entry
            })
            .collect();
        Manifest {
            chunking: Chunking {
                algorithm: ChunkAlgorithm::FastCdc2020,
                avg: 1 << 20,
                max: 4 << 20,
                min: 256 << 10,
            },
            chunks: Vec::new(),
            compression: Compression { algorithm: Zstd::Zstd, level: 3 },
            environment: None,
            format: envbuild_cache::manifest::FORMAT_V1.to_owned(),
            image_config: None,
            keys: None,
            size: offset + 1024,
            toc,
            toc_ref: None,
            chunks_ref: None,
        }
    }

    fn change(path: &str, kind: ChangeKind) -> FileChange {
        FileChange { path: path.to_owned(), kind }
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn a_few_changes_are_read_one_by_one_and_added_trees_whole() {
        let parent = parent(&[("usr", 900 * MB), ("workspace", 512), ("workspace/node_modules", 300 * MB)]);
        let changes = [
            change("/workspace", ChangeKind::Modified),
            change("/workspace/node_modules", ChangeKind::Modified),
            change("/workspace/node_modules/zod", ChangeKind::Added),
            change("/workspace/node_modules/zod/index.js", ChangeKind::Added),
            change("/workspace/package.json", ChangeKind::Modified),
            change("/var/cache/envbuild/npm/x", ChangeKind::Added),
        ];
        let plan = plan(&changes, &parent, &["/var/cache/envbuild", "/run/envbuild"], false).unwrap();
        assert_eq!(
            plan.parts,
            [
                ("workspace".to_owned(), Take::Entry),
                ("workspace/node_modules".to_owned(), Take::Entry),
                ("workspace/node_modules/zod".to_owned(), Take::Subtree),
                ("workspace/package.json".to_owned(), Take::Entry),
            ]
        );
        assert_eq!(plan.cost, 4 * READ_COST);
    }

    #[test]
    fn many_changes_in_a_small_directory_read_it_whole() {
        let parent = parent(&[("etc", 2 * MB), ("usr", 900 * MB), ("workspace", 60 * MB)]);
        let mut changes = vec![change("/etc", ChangeKind::Modified)];
        changes.extend((0..20).map(|i| change(&format!("/etc/file{i}"), ChangeKind::Modified)));
        let plan = plan(&changes, &parent, &[], false).unwrap();
        assert_eq!(plan.parts, [("etc".to_owned(), Take::Subtree)]);
        assert_eq!(plan.cost, READ_COST + REREAD_WEIGHT * 2 * MB);
        // Six new packages in a larger directory are six reads, not 60 MB read and stored again.
        let mut changes = vec![change("/workspace", ChangeKind::Modified)];
        changes.extend((0..6).map(|i| change(&format!("/workspace/pkg{i}"), ChangeKind::Added)));
        let plan = super::plan(&changes, &parent, &[], false).unwrap();
        assert_eq!(plan.parts.len(), 7, "{plan:?}");
    }

    #[test]
    fn mounts_are_never_read_and_too_many_changes_mean_a_full_export() {
        let parent = parent(&[("var", MB), ("var/cache", MB)]);
        let changes: Vec<_> =
            (0..10).map(|i| change(&format!("/var/cache/f{i}"), ChangeKind::Modified)).collect();
        // `/var/cache` is small, but reading it whole would read the mount under it.
        let plan = plan(&changes, &parent, &["/var/cache/envbuild"], false);
        assert!(plan.is_err(), "ten reads of a 2 MB file system cost more than exporting it: {plan:?}");
        let parent = self::parent(&[("usr", 900 * MB), ("var", MB), ("var/cache", MB)]);
        let plan = super::plan(&changes, &parent, &["/var/cache/envbuild"], false).unwrap();
        assert_eq!(plan.parts.len(), 10, "{plan:?}");
        let inside = [
            change("/var/cache/envbuild/npm", ChangeKind::Added),
            change("/var/cache/envbuild", ChangeKind::Modified),
        ];
        assert_eq!(
            super::plan(&inside, &parent, &["/var/cache/envbuild"], false).unwrap().parts,
            [],
            "the mount is not read"
        );
        for new_mount_point in ["/var/cache/envbuild", "/var/cache"] {
            let added = [change(new_mount_point, ChangeKind::Added)];
            assert!(
                super::plan(&added, &parent, &["/var/cache/envbuild"], false).is_err(),
                "{new_mount_point}"
            );
        }
        let strange = [change("/a/../b", ChangeKind::Added)];
        assert!(super::plan(&strange, &parent, &[], false).is_err());
    }
}
