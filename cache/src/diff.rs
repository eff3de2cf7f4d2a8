//! File-level differences between two snapshots, from their tables of contents alone.
//!
//! An entry is matched by its exact path. It is *changed* when its type, content (size and
//! content hash), link target, mode, owner, device numbers or extended attribute names differ;
//! a modification time alone counts only when asked for, since rebuilding the same thing
//! touches every mtime.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::manifest::{Manifest, TocEntry};

#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub path: String,
    pub old: TocEntry,
    pub new: TocEntry,
    /// What differs: `type`, `content`, `link`, `mode`, `owner`, `dev`, `xattrs`, `mtime`.
    pub aspects: Vec<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    pub added: Vec<TocEntry>,
    pub removed: Vec<TocEntry>,
    pub changed: Vec<Changed>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The exact name of an entry, for matching.
fn key(entry: &TocEntry) -> (&str, Option<&str>) {
    (entry.path.as_str(), entry.path_b64.as_deref())
}

pub fn diff(old: &Manifest, new: &Manifest, include_mtime: bool) -> Diff {
    diff_entries(&old.toc, &new.toc, include_mtime)
}

/// The same, for two tables of contents.
pub fn diff_entries(old: &[TocEntry], new: &[TocEntry], include_mtime: bool) -> Diff {
    let before: BTreeMap<_, &TocEntry> = old.iter().map(|e| (key(e), e)).collect();
    let after: BTreeMap<_, &TocEntry> = new.iter().map(|e| (key(e), e)).collect();
    let mut out = Diff::default();
    for (k, entry) in &after {
        match before.get(k) {
            None => out.added.push((*entry).clone()),
            Some(previous) => {
                let aspects = compare(previous, entry, include_mtime);
                if !aspects.is_empty() {
                    out.changed.push(Changed {
                        path: entry.path.clone(),
                        old: (*previous).clone(),
                        new: (*entry).clone(),
                        aspects,
                    });
                }
            }
        }
    }
    out.removed = before.iter().filter(|(k, _)| !after.contains_key(*k)).map(|(_, e)| (*e).clone()).collect();
    out
}

fn compare(a: &TocEntry, b: &TocEntry, include_mtime: bool) -> Vec<&'static str> {
    let mut aspects = Vec::new();
    if a.kind != b.kind {
        aspects.push("type");
    }
    if a.size != b.size || a.hash != b.hash {
        aspects.push("content");
    }
    if a.link != b.link || a.link_b64 != b.link_b64 {
        aspects.push("link");
    }
    if a.mode != b.mode {
        aspects.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid {
        aspects.push("owner");
    }
    if a.dev != b.dev {
        aspects.push("dev");
    }
    if a.xattrs != b.xattrs {
        aspects.push("xattrs");
    }
    if include_mtime && a.mtime != b.mtime {
        aspects.push("mtime");
    }
    aspects
}
