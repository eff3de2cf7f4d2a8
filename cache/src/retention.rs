//! Removing snapshots: `rm` of chosen ones, and `prune` by retention rules per repository.
//!
//! Snapshots are never garbage (see `gc`): removing one is a decision, made here. Removing a
//! snapshot deletes its manifest and every pointer to it (key records, heads, and, when asked,
//! refs), so no key resolves to it and no build starts from it; its chunks become
//! unreferenced unless another snapshot shares them, and `gc` collects them after its grace
//! period. A snapshot a ref names is kept unless the caller says otherwise: refs are names
//! people gave.
//!
//! **Prune rules** apply per repository, the one the key records name (`info.repository`, as
//! `build` writes it); snapshots no key record names (imports) form one more group. In each
//! group the newest `keep_last` are kept, and those created within `keep_within`; the rest
//! go. When both rules are given a snapshot either keeps is kept. Beyond the rules, a
//! snapshot a ref names is kept, and one a head record names (the newest build of a
//! repository on a system key, where its next build's install starts), unless the caller
//! includes them. Key records do not keep a snapshot: every build has one, so they would keep
//! everything; the records of what goes are removed with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::catalog::{self, HeadRecord, KeyRecord, RefRecord};
use crate::digest::SnapshotId;
use crate::error::{Error, Result};
use crate::layout::{self, HEADS, KEYS, ObjectPath, REFS};
use crate::restore;
use crate::store::Store;

/// The group of snapshots no key record names.
pub const UNNAMED: &str = "(imported)";

/// Every snapshot and every pointer to one.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Each snapshot with its repository (or [`UNNAMED`]) and when it was made.
    pub snapshots: Vec<Listed>,
    keys: Vec<(ObjectPath, SnapshotId)>,
    heads: Vec<(ObjectPath, SnapshotId)>,
    /// Ref names and what they name.
    pub refs: Vec<(String, SnapshotId)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub id: SnapshotId,
    pub repository: String,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
}

mod rfc3339 {
    pub(super) fn serialize<S: serde::Serializer>(
        t: &std::time::SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }
}

/// Reads the catalog of `store`. A pointer that cannot be read is skipped (it points nowhere
/// a prune could use), and said in the log.
pub async fn read(store: &dyn Store) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    let mut named: HashMap<SnapshotId, (String, SystemTime)> = HashMap::new();
    for meta in store.list(KEYS).await? {
        let Some(key) = layout::parse_key(meta.path.as_str()) else { continue };
        match catalog::read_key(store, &key).await {
            Ok(Some(KeyRecord { snapshot, created, info, .. })) => {
                let created = humantime::parse_rfc3339_weak(&created).unwrap_or(meta.last_modified);
                let repository = info.get("repository").and_then(|r| r.as_str()).map(str::to_owned);
                let entry = named.entry(snapshot).or_insert((UNNAMED.to_owned(), created));
                if let Some(repository) = repository {
                    entry.0 = repository;
                }
                entry.1 = entry.1.max(created);
                catalog.keys.push((meta.path, snapshot));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping `{}`: {e}", meta.path),
        }
    }
    for meta in store.list(HEADS).await? {
        match read_record::<HeadRecord>(store, &meta.path).await {
            Ok(Some(head)) => catalog.heads.push((meta.path, head.snapshot)),
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping `{}`: {e}", meta.path),
        }
    }
    for meta in store.list(REFS).await? {
        let name = meta.path.as_str().trim_start_matches(REFS).to_owned();
        match catalog::read_ref(store, &name).await {
            Ok(Some((RefRecord { snapshot, .. }, _))) => catalog.refs.push((name, snapshot)),
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping ref `{name}`: {e}"),
        }
    }
    for (id, meta) in catalog::list_snapshots(store).await? {
        let (repository, created) = named.remove(&id).unwrap_or((UNNAMED.to_owned(), meta.last_modified));
        catalog.snapshots.push(Listed { id, repository, created });
    }
    Ok(catalog)
}

async fn read_record<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    path: &ObjectPath,
) -> Result<Option<T>> {
    match store.get(path, catalog::MAX_RECORD_BYTES).await {
        Ok(got) => serde_json::from_slice(&got.bytes).map(Some).map_err(|e| Error::Io {
            context: format!("`{path}` in {} is damaged", store.location()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Catalog {
    /// The refs naming `id`.
    pub fn refs_to(&self, id: &SnapshotId) -> Vec<&str> {
        self.refs.iter().filter(|(_, s)| s == id).map(|(name, _)| name.as_str()).collect()
    }
}

/// What `prune` keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// The newest this many of each repository.
    pub keep_last: Option<usize>,
    /// Those created within this long.
    pub keep_within: Option<Duration>,
    /// Let snapshots a ref or a head record names go too.
    pub include_refs: bool,
}

/// A snapshot and why it goes or stays.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub snapshot: Listed,
    pub reason: String,
}

/// The snapshots a prune removes and keeps.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub remove: Vec<Decision>,
    pub keep: Vec<Decision>,
}

/// Applies `rules` to `catalog` as of `now` (see the module docs).
pub fn plan(catalog: &Catalog, rules: Rules, now: SystemTime) -> Plan {
    let mut groups: BTreeMap<&str, Vec<&Listed>> = BTreeMap::new();
    for snapshot in &catalog.snapshots {
        groups.entry(&snapshot.repository).or_default().push(snapshot);
    }
    let mut plan = Plan::default();
    for (_, mut members) in groups {
        members.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        for (rank, snapshot) in members.into_iter().enumerate() {
            let age = now.duration_since(snapshot.created).unwrap_or_default();
            let refs = catalog.refs_to(&snapshot.id);
            let reason = if rules.keep_last.is_some_and(|n| rank < n) {
                Some(format!("one of the newest {} of its repository", rules.keep_last.unwrap_or(0)))
            } else if rules.keep_within.is_some_and(|within| age <= within) {
                Some(format!(
                    "made within {}",
                    humantime::format_duration(rules.keep_within.unwrap_or_default())
                ))
            } else if !rules.include_refs && !refs.is_empty() {
                Some(format!("named by ref {}", refs.join(", ")))
            } else if !rules.include_refs && catalog.heads.iter().any(|(_, id)| *id == snapshot.id) {
                Some("the checkpoint the next build of its repository starts from (a head record)".to_owned())
            } else {
                None
            };
            let decision = |reason: String| Decision { snapshot: snapshot.clone(), reason };
            match reason {
                Some(reason) => plan.keep.push(decision(reason)),
                None => plan.remove.push(decision(format!(
                    "{} old, beyond what the rules keep",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                ))),
            }
        }
    }
    plan
}

/// Stored bytes that removing `remove` frees once `gc` has run: the chunks (data and lists) of
/// `remove` that no snapshot of `keep` uses.
pub async fn freed_bytes(store: &dyn Store, remove: &[SnapshotId], keep: &[SnapshotId]) -> Result<u64> {
    let mut kept: HashSet<crate::digest::Digest> = HashSet::new();
    for id in keep {
        if let Ok(manifest) = restore::read_manifest_shallow(store, id).await {
            kept.extend(manifest.unique_chunks().iter().map(|c| c.digest));
        }
    }
    let mut counted = HashSet::new();
    let mut freed = 0;
    for id in remove {
        if let Ok(manifest) = restore::read_manifest_shallow(store, id).await {
            for chunk in manifest.unique_chunks() {
                if !kept.contains(&chunk.digest) && counted.insert(chunk.digest) {
                    freed += chunk.stored_size;
                }
            }
        }
    }
    Ok(freed)
}

/// What a removal deleted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Removed {
    pub snapshots: Vec<SnapshotId>,
    pub keys: usize,
    pub heads: usize,
    pub refs: Vec<String>,
}

/// Removes the snapshots `ids` and every pointer to them (refs too: the caller decided those
/// go). Pointers go first, so a reader never finds a key record of a missing snapshot.
pub async fn remove(store: &Arc<dyn Store>, catalog: &Catalog, ids: &[SnapshotId]) -> Result<Removed> {
    let doomed: HashSet<&SnapshotId> = ids.iter().collect();
    let mut removed = Removed::default();
    for (path, snapshot) in &catalog.keys {
        if doomed.contains(snapshot) {
            store.delete(path).await?;
            removed.keys += 1;
        }
    }
    for (path, snapshot) in &catalog.heads {
        if doomed.contains(snapshot) {
            store.delete(path).await?;
            removed.heads += 1;
        }
    }
    for (name, snapshot) in &catalog.refs {
        if doomed.contains(snapshot) {
            store.delete(&layout::reference(name).map_err(crate::store::StoreError::from)?).await?;
            removed.refs.push(name.clone());
        }
    }
    for id in ids {
        // The image record goes with it; its digest pointers, which name it, are gc's.
        if let Err(e) = store.delete(&layout::image(id)).await
            && !e.is_not_found()
        {
            return Err(e.into());
        }
        store.delete(&layout::snapshot(id)).await?;
        removed.snapshots.push(*id);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn listed(n: u8, repository: &str, hours_ago: u64, now: SystemTime) -> Listed {
        Listed {
            id: SnapshotId(Digest::of(&[n])),
            repository: repository.to_owned(),
            created: now - Duration::from_secs(hours_ago * 3600),
        }
    }

    #[test]
    fn rules_apply_per_repository_and_refs_and_heads_are_kept_unless_included() {
        let now = SystemTime::now();
        let catalog = Catalog {
            snapshots: vec![
                listed(1, "repo-a", 1, now),
                listed(2, "repo-a", 30, now),
                listed(3, "repo-a", 50, now),
                listed(4, "repo-a", 70, now),
                listed(5, "repo-b", 100, now),
                listed(6, UNNAMED, 200, now),
            ],
            refs: vec![("release".into(), SnapshotId(Digest::of(&[4])))],
            heads: vec![(layout::head(&Digest::of(b"lineage")), SnapshotId(Digest::of(&[3])))],
            ..Catalog::default()
        };
        let ids = |decisions: &[Decision]| {
            let mut ids: Vec<u8> = decisions
                .iter()
                .map(|d| (1..=6u8).find(|n| SnapshotId(Digest::of(&[*n])) == d.snapshot.id).unwrap())
                .collect();
            ids.sort_unstable();
            ids
        };
        let plan = plan(&catalog, Rules { keep_last: Some(1), ..Rules::default() }, now);
        assert_eq!(ids(&plan.remove), [2]);
        assert_eq!(ids(&plan.keep), [1, 3, 4, 5, 6], "the newest of each group, the head's and the ref's");
        let within = Rules { keep_within: Some(Duration::from_hours(48)), ..Rules::default() };
        assert_eq!(ids(&super::plan(&catalog, within, now).remove), [5, 6]);
        let both =
            Rules { keep_last: Some(1), keep_within: Some(Duration::from_hours(48)), include_refs: true };
        assert_eq!(ids(&super::plan(&catalog, both, now).remove), [3, 4], "refs and heads included");
    }
}
