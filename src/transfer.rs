//! Copying a snapshot and its key records between two stores (`push`, `pull`), sending only
//! what the destination lacks; see `envbuild_cache::transfer` for the order that makes an
//! interrupted copy harmless.

use std::sync::Arc;

use envbuild_cache::ingest::Progress;
use envbuild_cache::transfer::{self, CopyReport};
use envbuild_cache::{SnapshotId, Store, catalog};

use crate::error::{Result, ResultExt};
use crate::session::Session;

/// Copies the snapshot `query` names in `from` into `to`.
pub async fn copy(
    session: &Session,
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    query: &str,
    verb: &'static str,
) -> Result<(SnapshotId, CopyReport)> {
    let id = catalog::resolve(&**from, query).await?;
    let counters = Arc::new(Progress::default());
    let _bar = session.reporter.progress(verb, &counters);
    let report =
        transfer::copy_snapshot(from, to, &id, session.jobs, &counters).await.with_context(|| {
            format!("cannot copy snapshot {id} from {} to {}", from.location(), to.location())
        })?;
    Ok((id, report))
}
