//! `envbuild ls`: the snapshots in the store.

use std::process::ExitCode;

use envbuild_cache::{catalog, restore};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::cli::{GlobalArgs, LsArgs};
use crate::{format, output, store};

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    size: u64,
    stored: u64,
    entries: usize,
    chunks: usize,
    created: String,
}

pub async fn run(global: &GlobalArgs, args: &LsArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(global).await?;
    let snapshots = catalog::list_snapshots(&*store).await?;
    let rows: Vec<(Row, std::time::SystemTime)> = futures::stream::iter(snapshots)
        .map(|(id, meta)| {
            let store = store.clone();
            async move {
                let manifest = restore::read_manifest(&*store, &id).await?;
                let row = Row {
                    id: id.to_string(),
                    size: manifest.size,
                    stored: manifest.unique_chunks().iter().map(|c| c.stored_size).sum(),
                    entries: manifest.toc.len(),
                    chunks: manifest.chunks.len(),
                    created: humantime::format_rfc3339_seconds(meta.last_modified).to_string(),
                };
                anyhow::Ok((row, meta.last_modified))
            }
        })
        .buffered(crate::jobs(global))
        .try_collect()
        .await?;
    if args.json {
        output::json(&rows.iter().map(|(r, _)| r).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        crate::ui::eprint_line(format!("no snapshots in {}", store.location()));
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!("{:<71}  {:>10}  {:>10}  {:>8}  CREATED", "SNAPSHOT", "SIZE", "STORED", "ENTRIES"));
    for (row, created) in &rows {
        output::line(format!(
            "{:<71}  {:>10}  {:>10}  {:>8}  {}",
            row.id,
            format::bytes(row.size),
            format::bytes(row.stored),
            row.entries,
            format::age(*created)
        ));
    }
    Ok(ExitCode::SUCCESS)
}
