//! Booting an environment from its image (DESIGN §6): a long-lived container with the
//! repository at `/workspace`, then `install` (idempotent, so cheap on a fresh snapshot), then
//! `start`, then each terminal as a named, long-running process.
//!
//! Processes are started with `docker exec` through a small runner script envbuild places in
//! the container (`/.envbuild/run.sh`). It sends each process's output to
//! `/var/log/envbuild/<name>.log`, where `envbuild logs` reads it (and redacts it on the way
//! out), and, for terminals, restarts the command when it exits. When the image has tmux, the
//! terminals run in one tmux session (`envbuild`), one window each, so a person can attach to
//! them; otherwise they run as supervised background processes. Either way they outlive the
//! `envbuild boot` that started them, until `envbuild stop`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::engine::{ByteStream, ContainerEngine, ContainerSpec, ExecSpec, Network, Output, OutputStream};
use crate::error::{BuildError, Result};
use crate::pipeline::{OutputSink, WORKSPACE};

/// Labels that describe a booted environment.
pub const NAME_LABEL: &str = "envbuild.name";
pub const SNAPSHOT_LABEL: &str = "envbuild.snapshot";
pub const SCOPES_LABEL: &str = "envbuild.scopes";
pub const TERMINALS_LABEL: &str = "envbuild.terminals";
/// Where process output goes inside the environment.
pub const LOG_DIR: &str = "/var/log/envbuild";
const RUNNER_PATH: &str = "/.envbuild/run.sh";

/// The runner: `run.sh NAME once|supervise COMMAND`.
const RUNNER: &str = r#"#!/bin/sh
# envbuild's process runner inside a booted environment: run.sh NAME once|supervise COMMAND.
# The output goes to /var/log/envbuild/NAME.log, which `envbuild logs` reads (redacted).
name=$1; mode=$2; command=$3
log=/var/log/envbuild/$name.log
echo $$ > "/var/log/envbuild/$name.pid"
if [ "$mode" = supervise ]; then
  while :; do
    sh -c "$command" >>"$log" 2>&1 </dev/null
    echo "[envbuild] $name exited with status $?; restarting in 1 s" >>"$log"
    sleep 1
  done
else
  sh -c "$command" >>"$log" 2>&1 </dev/null
fi
"#;

/// What a new environment is made of.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    pub name: String,
    pub image: String,
    /// `NAME=value`: the secrets given at boot (start and terminals see them).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
}

/// A tar stream of one file.
fn one_file(path: &str, content: &[u8], mode: u32) -> ByteStream {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(content.len() as u64);
    header.set_mode(mode);
    header.set_mtime(crate::tree::FIXED_MTIME);
    let bytes = builder
        .append_data(&mut header, path.trim_start_matches('/'), content)
        .and_then(|()| builder.into_inner())
        .unwrap_or_default();
    Box::pin(futures::stream::once(async move { Ok(Bytes::from(bytes)) }))
}

/// Creates and starts the environment's container (it runs nothing but a keep-alive) with the
/// runner script and the log directory in place.
pub async fn create(engine: &Arc<dyn ContainerEngine>, spec: &EnvironmentSpec) -> Result<String> {
    let mut labels = spec.labels.clone();
    labels.insert(NAME_LABEL.to_owned(), spec.name.clone());
    let container = engine
        .create_container(&ContainerSpec {
            name: Some(spec.name.clone()),
            image: spec.image.clone(),
            entrypoint: Some(Vec::new()),
            // Works with any shell, busybox's included: no `sleep infinity`.
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".into(),
            ],
            user: Some("0:0".into()),
            working_dir: Some(WORKSPACE.to_owned()),
            env: spec.env.clone(),
            labels,
            network: spec.network,
        })
        .await?;
    engine.upload(&container, "/", one_file(RUNNER_PATH, RUNNER.as_bytes(), 0o755)).await?;
    engine.start(&container).await?;
    let (code, _) = exec_to_end(
        engine,
        &container,
        &ExecSpec {
            cmd: vec!["sh".into(), "-c".into(), format!("mkdir -p {LOG_DIR} && chmod 1777 {LOG_DIR}")],
            user: Some("0:0".into()),
            ..ExecSpec::default()
        },
        None,
    )
    .await?;
    if code != 0 {
        return Err(BuildError::Input(format!(
            "cannot create {LOG_DIR} in the environment (exit code {code})"
        )));
    }
    Ok(container)
}

/// Runs a command to its end, streaming its output to `sink` (when given); returns its exit
/// code and its output when no sink took it.
pub async fn exec_to_end(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    spec: &ExecSpec,
    mut sink: Option<&mut dyn OutputSink>,
) -> Result<(i64, Vec<u8>)> {
    let (exec, mut output) = engine.exec(container, spec).await?;
    let mut captured = Vec::new();
    while let Some(item) = output.next().await {
        let chunk = item?;
        let bytes = match &chunk {
            Output::Stdout(b) | Output::Stderr(b) => b,
        };
        match sink.as_deref_mut() {
            Some(sink) => sink.output(bytes),
            None => captured.extend_from_slice(bytes),
        }
    }
    // The output ends when the process does; its code may take a moment to be recorded.
    for _ in 0..100 {
        if let Some(code) = engine.exec_exit_code(&exec).await? {
            return Ok((code, captured));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BuildError::Input("a command in the environment did not report its exit code".into()))
}

/// How `start` ended, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Exited(i64),
    /// Still running after the wait: a background service.
    Running,
}

/// Runs `start` as `user` through the runner, waiting up to `wait` for it to finish.
pub async fn start(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    command: &str,
    user: &str,
    wait: Duration,
) -> Result<StartOutcome> {
    let exec = engine
        .exec_detached(
            container,
            &ExecSpec {
                cmd: vec!["sh".into(), RUNNER_PATH.into(), "start".into(), "once".into(), command.into()],
                user: Some(user.to_owned()),
                working_dir: Some(WORKSPACE.to_owned()),
                env: Vec::new(),
            },
        )
        .await?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(code) = engine.exec_exit_code(&exec).await? {
            return Ok(StartOutcome::Exited(code));
        }
        if Instant::now() >= deadline {
            return Ok(StartOutcome::Running);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How terminals run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalMode {
    Tmux,
    Supervised,
}

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Starts each `(name, command)` as a long-running process as `user`.
pub async fn terminals(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    terminals: &[(String, String)],
    user: &str,
) -> Result<TerminalMode> {
    let as_user = |cmd: Vec<String>| ExecSpec {
        cmd,
        user: Some(user.to_owned()),
        working_dir: Some(WORKSPACE.to_owned()),
        env: Vec::new(),
    };
    let (has_tmux, _) = exec_to_end(
        engine,
        container,
        &as_user(vec!["sh".into(), "-c".into(), "command -v tmux".into()]),
        None,
    )
    .await?;
    let mode = if has_tmux == 0 { TerminalMode::Tmux } else { TerminalMode::Supervised };
    for (i, (name, command)) in terminals.iter().enumerate() {
        let runner = format!("sh {RUNNER_PATH} {} supervise {}", quote(name), quote(command));
        match mode {
            TerminalMode::Tmux => {
                let cmd = if i == 0 {
                    vec![
                        "tmux".into(),
                        "new-session".into(),
                        "-d".into(),
                        "-s".into(),
                        "envbuild".into(),
                        "-n".into(),
                        name.clone(),
                        runner,
                    ]
                } else {
                    vec![
                        "tmux".into(),
                        "new-window".into(),
                        "-d".into(),
                        "-t".into(),
                        "envbuild".into(),
                        "-n".into(),
                        name.clone(),
                        runner,
                    ]
                };
                let (code, output) = exec_to_end(engine, container, &as_user(cmd), None).await?;
                if code != 0 {
                    return Err(BuildError::Input(format!(
                        "tmux could not start terminal `{name}` (exit code {code}): {}",
                        String::from_utf8_lossy(&output).trim()
                    )));
                }
            }
            TerminalMode::Supervised => {
                engine.exec_detached(container, &as_user(vec!["sh".into(), "-c".into(), runner])).await?;
            }
        }
    }
    Ok(mode)
}

/// The output of log `name` (a terminal, `start`), or of all logs, following when asked.
pub async fn logs(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    name: Option<&str>,
    follow: bool,
) -> Result<OutputStream> {
    let files = name.map_or_else(|| format!("{LOG_DIR}/*.log"), |n| format!("{LOG_DIR}/{}.log", quote(n)));
    let script = format!("tail -n +1 {} {files}", if follow { "-f" } else { "" });
    let spec = ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script],
        user: Some("0:0".into()),
        ..ExecSpec::default()
    };
    let (_, output) = engine.exec(container, &spec).await?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a b"), "'a b'");
    }
}
