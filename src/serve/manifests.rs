//! The service's in-memory cache of manifests. Manifests are immutable, so caching them is
//! always correct; the cache only bounds memory (by an estimate of each manifest's decoded
//! size) and drops the oldest first. Replicas each keep their own: it is a cache, not state.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use envbuild_cache::SnapshotId;
use envbuild_cache::manifest::Manifest;

/// Immutable manifests by id, oldest out first when over the byte budget.
#[derive(Debug)]
pub(super) struct ManifestCache {
    budget: usize,
    inner: Mutex<Cached>,
}

/// Manifests with their estimated cost, their insertion order, and the total cost.
type Cached = (HashMap<SnapshotId, (Arc<Manifest>, usize)>, VecDeque<SnapshotId>, usize);

impl ManifestCache {
    pub(super) fn new(budget: usize) -> Self {
        Self { budget, inner: Mutex::new((HashMap::new(), VecDeque::new(), 0)) }
    }

    pub(super) fn get(&self, id: &SnapshotId) -> Option<Arc<Manifest>> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.0.get(id).map(|(m, _)| m.clone())
    }

    pub(super) fn insert(&self, id: SnapshotId, manifest: Arc<Manifest>) {
        // An estimate of the decoded size: what the entries hold, not the JSON.
        let cost =
            manifest.chunks.len() * 64 + manifest.toc.iter().map(|e| 160 + e.path.len()).sum::<usize>();
        if cost > self.budget {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order, total) = &mut *guard;
        if map.insert(id, (manifest, cost)).is_none() {
            order.push_back(id);
            *total += cost;
        }
        while *total > self.budget {
            let Some(oldest) = order.pop_front() else { break };
            if let Some((_, freed)) = map.remove(&oldest) {
                *total -= freed;
            }
        }
    }
}
