//! `envbuild ps`, `logs` and `stop`: booted environments.

use std::process::ExitCode;

use envbuild::{envs, format};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, ExecArgs, GlobalArgs, LogsArgs, PsArgs, ShellArgs, StopArgs, output, ui};

pub async fn ps(global: &GlobalArgs, args: &PsArgs, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let list = envs::list(&session).await?;
    let resources = if args.all { Some(envs::resources(&session).await?) } else { None };
    if args.json {
        if let Some(resources) = resources {
            output::json(&serde_json::json!({ "environments": list, "runtime": resources }))?;
        } else {
            output::json(&list)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        ui::eprint_line("no environments are booted");
    } else {
        output::line(format!(
            "{:<24} {:<7} {:<8} {:<20} {:<23} TERMINALS",
            "NAME", "ENGINE", "STATUS", "PORTS", "SNAPSHOT"
        ))?;
    }
    for env in &list {
        let ports =
            env.ports.iter().map(|p| format!("{}->{}", p.host, p.container)).collect::<Vec<_>>().join(",");
        let terminals = env
            .terminals
            .iter()
            .zip(&env.terminal_states)
            .map(|(t, s)| format!("{t} ({s})"))
            .collect::<Vec<_>>()
            .join(", ");
        output::line(format!(
            "{:<24} {:<7} {:<8} {:<20} {:<23} {terminals}",
            env.name,
            env.engine,
            if env.running { "running" } else { "stopped" },
            if ports.is_empty() { "-".to_owned() } else { ports },
            env.snapshot.chars().take(19).collect::<String>(),
        ))?;
    }
    if let Some(r) = resources {
        output::line(format!("\nruntime directory {}", r.root.display()))?;
        for e in &r.environments {
            output::line(format!("environment  {:<24} {}", e.name, e.state))?;
        }
        for t in &r.trees {
            output::line(format!("tree         {}  {}", t.snapshot, format::bytes(t.bytes)))?;
        }
        for m in &r.mounts {
            output::line(format!("mount        {}", m.display()))?;
        }
        for n in &r.network_namespaces {
            output::line(format!("netns        {n}"))?;
        }
        for p in &r.pasta {
            output::line(format!("pasta        pid {p}"))?;
        }
        for c in &r.containers {
            output::line(format!("container    {c}"))?;
        }
        for image in &r.docker_images {
            output::line(format!("docker image {image}"))?;
        }
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
    ui::eprint_line(format!(
        "stopped `{0}`; `envbuild logs {0}` still reads its output until `envbuild rm {0}`",
        args.name
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(
    global: &GlobalArgs,
    args: &ExecArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let tty = args.tty || std::io::IsTerminal::is_terminal(&std::io::stdin());
    let code = envs::exec(&session, &args.name, &args.command, tty).await?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

pub async fn shell(
    global: &GlobalArgs,
    args: &ShellArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let command = ["sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]
        .map(str::to_owned);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let code = envs::exec(&session, &args.name, &command, tty).await?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
