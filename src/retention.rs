//! `rm` and `prune`: removing snapshots from the store (see `envbuild_cache::retention`),
//! with what this host's engine holds of them (checkpoint images, images a snapshot was
//! loaded as, install containers left stopped), and, for `prune`, collecting the chunks they
//! leave.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use envbuild_builder::pipeline;
use envbuild_cache::gc::{self, GcOptions, GcReport};
use envbuild_cache::retention::{self, Plan, Removed, Rules};
use envbuild_cache::{SnapshotId, catalog};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::session::Session;

/// What `rm` removed.
#[derive(Debug, Clone, Serialize)]
pub struct RmReport {
    pub removed: Removed,
    /// Engine images and containers removed.
    pub engine: Vec<String>,
}

/// Removes the snapshots `queries` name (ids, prefixes, refs). A snapshot a ref names is
/// refused unless `force`, which removes the refs too.
pub async fn rm(session: &Session, queries: &[String], force: bool) -> Result<RmReport> {
    let store = &session.store;
    let mut ids = Vec::new();
    for query in queries {
        let id = catalog::resolve(&**store, query).await?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let catalog = retention::read(&**store).await?;
    if !force {
        for id in &ids {
            let refs = catalog.refs_to(id);
            if !refs.is_empty() {
                return Err(Error::Failed(format!(
                    "snapshot {id} is named by ref {}; nothing was removed\nhint: pass --force to remove it and the ref",
                    refs.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let removed = retention::remove(store, &catalog, &ids).await?;
    let engine = remove_from_engine(session, &ids, false).await;
    Ok(RmReport { removed, engine })
}

/// How to prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    pub rules: Rules,
    pub dry_run: bool,
    /// `gc`'s grace period for the chunks the removed snapshots leave.
    pub grace: Duration,
}

/// What `prune` decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub plan: Plan,
    /// Stored bytes the removed snapshots alone hold.
    pub freed_bytes: u64,
    pub removed: Option<Removed>,
    pub engine: Vec<String>,
    #[serde(skip)]
    pub gc: Option<GcReport>,
}

/// Applies retention rules per repository; without `dry_run`, removes what they let go,
/// collects the chunks left behind, and removes this host's engine images of them.
pub async fn prune(session: &Session, options: PruneOptions) -> Result<PruneReport> {
    if options.rules.keep_last.is_none() && options.rules.keep_within.is_none() {
        return Err(Error::Failed(
            "prune needs a rule: what to keep\nhint: --keep-last N (per repository) and/or --keep-within DURATION".into(),
        ));
    }
    let store = &session.store;
    let catalog = retention::read(&**store).await?;
    let plan = retention::plan(&catalog, options.rules, SystemTime::now());
    let remove: Vec<SnapshotId> = plan.remove.iter().map(|d| d.snapshot.id).collect();
    let keep: Vec<SnapshotId> = plan.keep.iter().map(|d| d.snapshot.id).collect();
    let freed_bytes = retention::freed_bytes(&**store, &remove, &keep).await?;
    if options.dry_run {
        return Ok(PruneReport { plan, freed_bytes, removed: None, engine: Vec::new(), gc: None });
    }
    let removed = retention::remove(store, &catalog, &remove).await?;
    let engine = remove_from_engine(session, &remove, true).await;
    let gc =
        gc::gc(store, GcOptions { grace: options.grace, dry_run: false, concurrency: session.jobs }).await?;
    Ok(PruneReport { plan, freed_bytes, removed: Some(removed), engine, gc: Some(gc) })
}

/// Removes this host's engine images of `ids` (checkpoints, loaded snapshots), and with
/// `leftovers` the install containers left stopped; returns what went. Without an engine
/// there is nothing to remove; an image in use stays.
async fn remove_from_engine(session: &Session, ids: &[SnapshotId], leftovers: bool) -> Vec<String> {
    // The runc runtime's trees of them, first: the Docker engine may not answer.
    let mut gone = crate::envs::remove_trees(ids);
    let Ok(engine) = session.engine.get().await else { return gone };
    let wanted: HashSet<String> = ids.iter().map(ToString::to_string).collect();
    for label in [pipeline::CHECKPOINT_LABEL, pipeline::SNAPSHOT_LABEL] {
        let Ok(images) = engine.labelled_images(label).await else { continue };
        for (image, labels) in images {
            if labels.get(label).is_some_and(|id| wanted.contains(id)) {
                match engine.remove_image(&image).await {
                    Ok(()) => gone.push(format!("image {image}")),
                    Err(e) => tracing::info!("kept image {image}: {e}"),
                }
            }
        }
    }
    if leftovers && let Ok(containers) = engine.containers("envbuild.role").await {
        for container in containers.into_iter().filter(|c| !c.running) {
            if engine.remove_container(&container.id).await.is_ok() {
                gone.push(format!("container {}", container.name));
            }
        }
    }
    gone
}
