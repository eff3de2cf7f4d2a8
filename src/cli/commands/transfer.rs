//! `envbuild push` and `envbuild pull`: copy a snapshot between stores.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use envbuild::{format, store, transfer};
use envbuild_cache::Store;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, PullArgs, PushArgs, output, ui};

pub async fn push(
    global: &GlobalArgs,
    args: &PushArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let to = store::open(&cli::store_options(global, Some(&args.to))?).await?;
    copy(&session, &session.store.clone(), &to, &args.snapshot, "pushing", args.json).await
}

pub async fn pull(
    global: &GlobalArgs,
    args: &PullArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let from = store::open(&cli::store_options(global, Some(&args.from))?).await?;
    copy(&session, &from, &session.store.clone(), &args.snapshot, "pulling", args.json).await
}

async fn copy(
    session: &envbuild::Session,
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    query: &str,
    verb: &'static str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (id, report) = transfer::copy(session, from, to, query, verb).await?;
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
        output::line(id)?;
    }
    Ok(ExitCode::SUCCESS)
}
