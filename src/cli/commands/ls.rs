//! `envbuild ls`: the snapshots in the store.

use std::process::ExitCode;

use envbuild::{format, snapshots};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, LsArgs, output, ui};

pub async fn run(global: &GlobalArgs, args: &LsArgs, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let rows = snapshots::list(&session).await?;
    if args.json {
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        ui::eprint_line(format!("no snapshots in {}", session.store.location()));
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!("{:<71}  {:>10}  {:>10}  {:>8}  CREATED", "SNAPSHOT", "SIZE", "STORED", "ENTRIES"))?;
    for row in &rows {
        if let Some(damage) = &row.damage {
            output::line(format!("{:<71}  damaged  {}", row.id.to_string(), format::age(row.created)))?;
            ui::eprint_line(format!(
                "warning: {damage}\nhint: `envbuild verify` checks the store; `envbuild rm` removes a snapshot"
            ));
            continue;
        }
        output::line(format!(
            "{:<71}  {:>10}  {:>10}  {:>8}  {}",
            row.id.to_string(),
            format::bytes(row.size),
            format::bytes(row.stored),
            row.entries,
            format::age(row.created)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
