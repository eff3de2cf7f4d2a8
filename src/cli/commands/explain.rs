//! `envbuild explain A B`: which inputs differ between two builds.

use std::process::ExitCode;

use envbuild::build;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, ExplainArgs, GlobalArgs, output, ui};

pub async fn run(
    global: &GlobalArgs,
    args: &ExplainArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let repo = crate::cli::commands::build::repo_options(&args.repo)?;
    let explanation = build::explain(&session, &args.a, args.b.as_deref(), &repo).await?;
    let (a, b, differences) = (&explanation.a, &explanation.b, &explanation.differences);
    if args.json {
        output::json(&serde_json::json!({
            "a": { "system_key": a.system_key, "env_key": a.env_key },
            "b": { "system_key": b.system_key, "env_key": b.env_key, "built": explanation.b_built },
            "differences": differences,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for d in differences {
        let change = match (&d.before, &d.after) {
            (None, Some(after)) => format!("added ({after})"),
            (Some(before), None) => format!("removed (was {before})"),
            (Some(before), Some(after)) => format!("{before} -> {after}"),
            (None, None) => String::new(),
        };
        output::line(format!("{:<6} {}: {change}", d.key, d.input))?;
    }
    let same_system = a.system_key == b.system_key;
    ui::eprint_line(match (differences.len(), same_system) {
        (0, _) => "no input differs: both builds have the same keys".to_owned(),
        (n, true) => format!("{n} input(s) differ, all in the env key: the system image is shared"),
        (n, false) => format!("{n} input(s) differ; the system keys differ, so the system image was rebuilt"),
    });
    if let Some(how) = &explanation.b_built {
        ui::eprint_line(format!("the second build: {how}"));
    }
    Ok(ExitCode::SUCCESS)
}
