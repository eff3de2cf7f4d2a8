//! Leases keep `gc` and writers apart, on any backend, with nothing but objects.
//!
//! A writer may find a chunk already stored and reference it from a manifest it has not yet
//! published; if `gc` deleted that chunk in between, the manifest would point at nothing. A
//! grace period alone does not prevent this (the chunk can be old), so writers and `gc` take
//! leases: objects under `v1/leases/` (`write-<id>`, `gc-<id>`). Each side first writes its
//! own lease and then lists the others: a writer that sees a live `gc` lease withdraws and
//! waits, and `gc` that sees a live writer (or another `gc`) withdraws and reports it. Since
//! both write before they look, and listings after a write see that write (true of S3 since
//! 2020, of local directories, and of the HTTP service over either), at least one of two
//! racing parties sees the other; never both proceed.
//!
//! A lease is live while its object was modified within [`LIVE_FOR`]; holders refresh it every
//! [`REFRESH_EVERY`]. A lease names its holder (host and process id): one held by a process of
//! this host that no longer runs (killed, crashed) is released at once by whoever finds it, so
//! only a holder on another host that died can block the other side, for at most [`LIVE_FOR`].
//! A refusal says whose lease it is and since when.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::layout::{self, LEASES, ObjectPath};
use crate::store::{PutMode, Store};

pub const LIVE_FOR: Duration = Duration::from_mins(15);
pub const REFRESH_EVERY: Duration = Duration::from_mins(5);
/// How long a writer waits for a running `gc` before giving up.
const WRITER_PATIENCE: Duration = Duration::from_mins(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    Write,
    Gc,
}

impl LeaseKind {
    fn prefix(self) -> &'static str {
        match self {
            LeaseKind::Write => "write-",
            LeaseKind::Gc => "gc-",
        }
    }
}

/// A held lease. Release it with [`Lease::release`]; dropping it stops the refresh and leaves
/// the object to expire.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn Store>,
    path: ObjectPath,
    refresher: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub async fn release(self) {
        self.refresher.abort();
        // Best effort: an unreleased lease expires on its own.
        let _ = self.store.delete(&self.path).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn body(kind: LeaseKind) -> Bytes {
    let doc = serde_json::json!({
        "kind": match kind { LeaseKind::Write => "write", LeaseKind::Gc => "gc" },
        "host": this_host(),
        "pid": std::process::id(),
    });
    Bytes::from(doc.to_string())
}

async fn put_own(store: &Arc<dyn Store>, kind: LeaseKind) -> Result<ObjectPath> {
    let name = format!("{}{:016x}", kind.prefix(), rand::random::<u64>());
    let path = layout::lease(&name).map_err(|e| Error::Internal(e.to_string()))?;
    store.put(&path, body(kind), PutMode::Create).await?;
    Ok(path)
}

/// What a lease says of its holder.
#[derive(Debug, serde::Deserialize)]
struct Holder {
    host: String,
    pid: u32,
}

fn this_host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// A live lease of another process: its path, who holds it, and since when, for messages.
#[derive(Debug)]
struct Live {
    holder: String,
}

/// Live leases of `kind` other than `own`. Leases of processes of this host that no longer
/// run are released on the way.
async fn live_others(store: &Arc<dyn Store>, kind: LeaseKind, own: &ObjectPath) -> Result<Vec<Live>> {
    let now = SystemTime::now();
    let prefix = format!("{LEASES}{}", kind.prefix());
    let host = this_host();
    let mut live = Vec::new();
    for meta in store.list(&prefix).await? {
        if meta.path == *own || now.duration_since(meta.last_modified).is_ok_and(|age| age >= LIVE_FOR) {
            continue;
        }
        let holder: Option<Holder> = match store.get(&meta.path, 4096).await {
            Ok(got) => serde_json::from_slice(&got.bytes).ok(),
            // Released meanwhile.
            Err(e) if e.is_not_found() => continue,
            Err(_) => None,
        };
        let since = now.duration_since(meta.last_modified).map_or_else(
            |_| "just now".to_owned(),
            |age| format!("refreshed {} ago", humantime::format_duration(Duration::from_secs(age.as_secs()))),
        );
        let described = match &holder {
            Some(h)
                if h.host == host && i32::try_from(h.pid).is_ok_and(|pid| !crate::staging::alive(pid)) =>
            {
                tracing::info!(
                    "releasing `{}`: its holder, process {} of this host, no longer runs",
                    meta.path,
                    h.pid
                );
                store.delete(&meta.path).await?;
                continue;
            }
            Some(h) => format!("process {} on {}, {since}", h.pid, h.host),
            None => format!("an unknown holder, {since}"),
        };
        live.push(Live { holder: format!("`{}` ({described})", meta.path) });
    }
    Ok(live)
}

fn start_refresher(store: Arc<dyn Store>, path: ObjectPath, kind: LeaseKind) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if let Err(e) = store.put(&path, body(kind), PutMode::Overwrite).await {
                tracing::warn!("cannot refresh the lease `{path}`: {e}");
            }
        }
    })
}

/// Takes a writer's lease, waiting for a running `gc` to finish.
pub async fn acquire_write(store: &Arc<dyn Store>) -> Result<Lease> {
    let started = tokio::time::Instant::now();
    loop {
        let own = put_own(store, LeaseKind::Write).await?;
        let gcs = live_others(store, LeaseKind::Gc, &own).await?;
        if gcs.is_empty() {
            let refresher = start_refresher(store.clone(), own.clone(), LeaseKind::Write);
            return Ok(Lease { store: store.clone(), path: own, refresher });
        }
        store.delete(&own).await?;
        if started.elapsed() > WRITER_PATIENCE {
            return Err(Error::Busy(format!(
                "a garbage collection is running in {} (lease {}); try again when it is done",
                store.location(),
                gcs[0].holder
            )));
        }
        tracing::info!("waiting for the garbage collection in {} to finish", store.location());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Takes `gc`'s lease, or says which writers are active.
pub async fn acquire_gc(store: &Arc<dyn Store>) -> Result<Lease> {
    let own = put_own(store, LeaseKind::Gc).await?;
    let mut others = live_others(store, LeaseKind::Write, &own).await?;
    others.extend(live_others(store, LeaseKind::Gc, &own).await?);
    if !others.is_empty() {
        store.delete(&own).await?;
        return Err(Error::Busy(format!(
            "{} other process{} writing to or collecting {} ({}); gc never runs beside a writer, try again later",
            others.len(),
            if others.len() == 1 { " is" } else { "es are" },
            store.location(),
            others.iter().map(|l| l.holder.clone()).collect::<Vec<_>>().join(", ")
        )));
    }
    let refresher = start_refresher(store.clone(), own.clone(), LeaseKind::Gc);
    Ok(Lease { store: store.clone(), path: own, refresher })
}

/// Leases whose holders are gone (not modified within [`LIVE_FOR`]), for `gc` to remove.
pub async fn stale(store: &Arc<dyn Store>) -> Result<Vec<ObjectPath>> {
    let now = SystemTime::now();
    Ok(store
        .list(LEASES)
        .await?
        .into_iter()
        .filter(|m| now.duration_since(m.last_modified).is_ok_and(|age| age >= LIVE_FOR))
        .map(|m| m.path)
        .collect())
}
