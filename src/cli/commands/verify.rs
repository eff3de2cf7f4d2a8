//! `envbuild verify`: is every snapshot whole? Exit 1 naming any damage.

use std::process::ExitCode;
use std::sync::Arc;

use envbuild_cache::ingest::Progress;
use envbuild_cache::{catalog, verify};

use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, VerifyArgs, output, ui};
use envbuild::format;

pub async fn run(
    global: &GlobalArgs,
    args: &VerifyArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let store = session.store.clone();
    let mut ids = Vec::new();
    for query in &args.snapshots {
        ids.push(catalog::resolve(&*store, query).await?);
    }
    let counters = Arc::new(Progress::default());
    let report = verify::verify(&store, &ids, args.read_data, session.jobs, &counters).await?;
    if args.json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({ "object": p.object, "problem": p.detail }))
            .collect();
        output::json(&serde_json::json!({
            "snapshots": report.snapshots,
            "chunks": report.chunks,
            "bytes_read": report.bytes_read,
            "ok": report.problems.is_empty(),
            "problems": problems,
        }))?;
    } else {
        for problem in &report.problems {
            ui::eprint_line(format!("damaged: {}: {}", problem.object, problem.detail));
        }
        let depth = if args.read_data {
            format!("read and re-hashed {}", format::bytes(report.bytes_read))
        } else {
            "checked that every chunk exists with its recorded size (add --read-data to re-hash them)"
                .to_owned()
        };
        let verdict = match report.problems.len() {
            0 => "no damage".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        };
        ui::eprint_line(format!(
            "verified {} snapshot{} and {} chunks in {}: {depth}; {verdict}",
            report.snapshots,
            if report.snapshots == 1 { "" } else { "s" },
            report.chunks,
            store.location()
        ));
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
