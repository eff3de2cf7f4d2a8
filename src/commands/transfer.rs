//! `envbuild push` and `envbuild pull`: copy a snapshot between stores.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use envbuild_cache::ingest::Progress;
use envbuild_cache::{Store, catalog, transfer};

use crate::cli::{GlobalArgs, PullArgs, PushArgs};
use crate::{format, output, progress, store, ui};

pub async fn push(global: &GlobalArgs, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let from = store::open(global).await?;
    let to = store::open_at(Some(&args.to), global).await?;
    copy(global, &from, &to, &args.snapshot, "pushing", args.json).await
}

pub async fn pull(global: &GlobalArgs, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let from = store::open_at(Some(&args.from), global).await?;
    let to = store::open(global).await?;
    copy(global, &from, &to, &args.snapshot, "pulling", args.json).await
}

async fn copy(
    global: &GlobalArgs,
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    query: &str,
    verb: &'static str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let id = catalog::resolve(&**from, query).await?;
    let counters = Arc::new(Progress::default());
    let started = Instant::now();
    let bar = progress::Bar::start(&counters, verb);
    let report =
        transfer::copy_snapshot(from, to, &id, crate::jobs(global), &counters).await.with_context(|| {
            format!("cannot copy snapshot {id} from {} to {}", from.location(), to.location())
        })?;
    drop(bar);
    let elapsed = started.elapsed();
    ui::eprint_line(format!(
        "copied {id} from {} to {} in {}: sent {} of {} chunks ({} of {}, {}), {} key record{}{}",
        from.location(),
        to.location(),
        format::duration(elapsed),
        report.copied_chunks,
        report.chunks,
        format::bytes(report.copied_bytes),
        format::bytes(report.total_bytes),
        format::rate(report.copied_bytes, elapsed),
        report.keys,
        if report.keys == 1 { "" } else { "s" },
        if report.published { "" } else { "; the destination already had the snapshot" },
    ));
    if json {
        output::json(&serde_json::json!({
            "id": id,
            "from": from.location(),
            "to": to.location(),
            "seconds": elapsed.as_secs_f64(),
            "chunks": report.chunks,
            "copied_chunks": report.copied_chunks,
            "copied_bytes": report.copied_bytes,
            "total_bytes": report.total_bytes,
            "keys": report.keys,
            "published": report.published,
        }))?;
    } else {
        output::line(id);
    }
    Ok(ExitCode::SUCCESS)
}
