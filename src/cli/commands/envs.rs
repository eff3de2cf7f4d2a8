//! `envbuild ps`, `logs` and `stop`: booted environments.

use std::process::ExitCode;

use envbuild::envs;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, LogsArgs, PsArgs, StopArgs, output, ui};

pub async fn ps(global: &GlobalArgs, args: &PsArgs, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let list = envs::list(&session).await?;
    if args.json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        ui::eprint_line("no environments are booted");
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!("{:<24} {:<9} {:<23} TERMINALS", "NAME", "STATUS", "SNAPSHOT"))?;
    for env in &list {
        output::line(format!(
            "{:<24} {:<9} {:<23} {}",
            env.name,
            if env.running { "running" } else { "stopped" },
            env.snapshot.chars().take(19).collect::<String>(),
            env.terminals.join(",")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(
    global: &GlobalArgs,
    args: &LogsArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let mut stdout = std::io::stdout();
    envs::logs(&session, &args.name, args.terminal.as_deref(), args.follow, &mut stdout).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(
    global: &GlobalArgs,
    args: &StopArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    envs::stop(&session, &args.name).await?;
    ui::eprint_line(format!("stopped `{}` and removed its container", args.name));
    Ok(ExitCode::SUCCESS)
}
