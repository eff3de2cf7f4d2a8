//! The package-manager cache volumes of this host: one per repository, mounted during install
//! (see `envbuild_builder::workspace`), so a changed dependency downloads only what is new.
//!
//! They are bounded: `gc` removes a volume unused for longer than [`MAX_AGE`], and all but
//! the [`KEEP`] most recently used. When each was last used is kept in a small file of this
//! host (`~/.cache/envbuild/package-caches.json`), since volumes carry no time of use; a
//! volume missing from it counts as used when gc first sees it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::session::Session;

/// The label every package-cache volume carries (its value: the repository).
pub const LABEL: &str = "envbuild.package-cache";
/// Unused for longer than this, a volume goes.
pub const MAX_AGE: Duration = Duration::from_hours(14 * 24);
/// At most this many volumes stay, the most recently used.
pub const KEEP: usize = 16;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Usage {
    /// Volume → seconds since the epoch of its last use.
    last_used: BTreeMap<String, u64>,
}

fn usage_file() -> PathBuf {
    crate::store::default_location().join("package-caches.json")
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_usage() -> Usage {
    std::fs::read(usage_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write_usage(usage: &Usage) -> Result<()> {
    let path = usage_file();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("cannot create `{}`", parent.display())))?;
    }
    let bytes = serde_json::to_vec_pretty(usage)
        .map_err(|e| Error::Failed(format!("cannot encode the cache usage: {e}")))?;
    // Through a temporary file: a reader never sees half of it.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, bytes).map_err(Error::io(format!("cannot write `{}`", partial.display())))?;
    std::fs::rename(&partial, &path).map_err(Error::io(format!("cannot write `{}`", path.display())))
}

/// Makes sure the cache volume `name` of `repository` exists, and notes its use now.
pub async fn prepare(session: &Session, name: &str, repository: &str) -> Result<()> {
    let engine = session.engine.get().await?;
    engine.ensure_volume(name, &BTreeMap::from([(LABEL.to_owned(), repository.to_owned())])).await?;
    let mut usage = read_usage();
    usage.last_used.insert(name.to_owned(), now());
    if let Err(e) = write_usage(&usage) {
        // Losing a time of use only makes a volume look newer to gc.
        tracing::debug!("cannot record the use of `{name}`: {e}");
    }
    Ok(())
}

/// Removes the cache volumes gc's bounds say go; returns their names. With `dry_run`,
/// removes nothing.
pub async fn collect(session: &Session, dry_run: bool) -> Result<Vec<String>> {
    let engine = session.engine.get().await?;
    let mut usage = read_usage();
    let current = now();
    let mut volumes: Vec<(String, u64)> = engine
        .volumes(LABEL)
        .await?
        .into_iter()
        .map(|name| {
            let used = *usage.last_used.entry(name.clone()).or_insert(current);
            (name, used)
        })
        .collect();
    volumes.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
    let mut removed = Vec::new();
    for (index, (name, used)) in volumes.iter().enumerate() {
        let too_old = current.saturating_sub(*used) > MAX_AGE.as_secs();
        if index >= KEEP || too_old {
            if !dry_run {
                engine.remove_volume(name).await?;
                usage.last_used.remove(name);
            }
            removed.push(name.clone());
        }
    }
    if !dry_run {
        usage.last_used.retain(|name, _| volumes.iter().any(|(v, _)| v == name));
        write_usage(&usage)?;
    }
    Ok(removed)
}
