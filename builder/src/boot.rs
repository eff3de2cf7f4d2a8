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
//!
//! Every Engine API call costs tens of milliseconds (an archive upload or a container start
//! far more), and boot is on the path of every agent session, so the sequence is kept short:
//! the runner, the log directory and the repository go in with one upload before the container
//! starts, and all terminals are launched by one exec of the runner, which also decides
//! between tmux and supervision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::engine::{ByteStream, ContainerEngine, ContainerSpec, ExecSpec, Network, OutputStream};
use crate::error::{BuildError, Result};
use crate::pipeline::WORKSPACE;

/// Labels that describe a booted environment.
pub const NAME_LABEL: &str = "envbuild.name";
pub const SNAPSHOT_LABEL: &str = "envbuild.snapshot";
pub const SCOPES_LABEL: &str = "envbuild.scopes";
pub const TERMINALS_LABEL: &str = "envbuild.terminals";
/// `HOST:CONTAINER,...`: the published ports.
pub const PORTS_LABEL: &str = "envbuild.ports";
/// Where process output goes inside the environment.
pub const LOG_DIR: &str = "/var/log/envbuild";
/// Where the environment finds its own config (normalized, read-only).
pub const CONFIG_PATH: &str = "/etc/envbuild/environment.json";
const RUNNER_PATH: &str = "/.envbuild/run.sh";

/// The runner: `run.sh NAME once|supervise COMMAND`, or `run.sh launch NAME COMMAND...` for
/// the terminals (commands are arguments, never re-parsed by a shell other than their own).
const RUNNER: &str = r#"#!/bin/sh
# envbuild's process runner inside a booted environment.
#   run.sh NAME once COMMAND        runs COMMAND once
#   run.sh NAME supervise COMMAND   runs COMMAND, again whenever it exits
#   run.sh launch NAME COMMAND ...  starts each terminal, supervised, in tmux when there is one;
#                                   prints the mode
# The output goes to /var/log/envbuild/NAME.log, which `envbuild logs` reads (redacted).
if [ "$1" = launch ]; then
  shift
  # When tmux cannot start (it needs a UTF-8 locale, say), the terminals are supervised
  # without it, and the reason is the first line of output.
  mode=supervised
  if command -v tmux >/dev/null 2>&1; then
    if why=$(tmux new-session -d -s envbuild -n "$1" sh "$0" "$1" supervise "$2" 2>&1); then
      mode=tmux
      shift 2
      while [ $# -ge 2 ]; do
        tmux new-window -d -t envbuild -n "$1" sh "$0" "$1" supervise "$2" || exit 1
        shift 2
      done
    else
      echo "tmux cannot start: $why" | head -n 1
    fi
  fi
  while [ $# -ge 2 ]; do
    sh "$0" "$1" supervise "$2" </dev/null >/dev/null 2>&1 &
    shift 2
  done
  echo $mode
  exit 0
fi
name=$1; mode=$2; command=$3
log=/var/log/envbuild/$name.log
# The environment's secrets, from a tmpfs file only its user reads (never the container's
# configuration).
if [ -r /run/envbuild/secrets.env ]; then set -a; . /run/envbuild/secrets.env; set +a; fi
echo $$ > "/var/log/envbuild/$name.pid"
# NAME.state says `running`, or `exited CODE` (what `envbuild ps` shows).
state=/var/log/envbuild/$name.state
if [ "$mode" = supervise ]; then
  while :; do
    echo running > "$state"
    sh -c "$command" >>"$log" 2>&1 </dev/null
    code=$?
    echo "exited $code" > "$state"
    echo "[envbuild] $name exited with status $code; restarting in 1 s" >>"$log"
    sleep 1
  done
else
  echo running > "$state"
  sh -c "$command" >>"$log" 2>&1 </dev/null
  code=$?
  echo "exited $code" > "$state"
  exit $code
fi
"#;

/// What a new environment is made of.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    pub name: String,
    pub image: String,
    /// `NAME=value`: the settings given at boot (never secrets: those go in a tmpfs file).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    pub ports: Vec<crate::engine::PortMapping>,
}

/// Tar entries, without the end-of-archive blocks, so that another tar stream can follow.
fn tar_prefix(entries: &[(&str, &[u8], u32)]) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for &(path, content, mode) in entries {
        let mut header = tar::Header::new_gnu();
        let is_dir = path.ends_with('/');
        header.set_entry_type(if is_dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_mtime(crate::tree::FIXED_MTIME);
        // Appending to a Vec cannot fail but for a path tar cannot encode; ours are constants.
        let _ = builder.append_data(&mut header, path, content);
    }
    Bytes::from(builder.get_ref().clone())
}

/// Creates the environment's container (it runs nothing but a keep-alive), not started yet:
/// the user is resolved from its files and [`populate_and_start`] finishes it.
pub async fn create(engine: &Arc<dyn ContainerEngine>, spec: &EnvironmentSpec) -> Result<String> {
    let mut labels = spec.labels.clone();
    labels.insert(NAME_LABEL.to_owned(), spec.name.clone());
    Ok(engine
        .create_container(&ContainerSpec {
            name: Some(spec.name.clone()),
            image: spec.image.clone(),
            entrypoint: Some(Vec::new()),
            cmd: vec!["sh".into(), "-c".into(), crate::pipeline::KEEP_ALIVE.into()],
            user: Some("0:0".into()),
            working_dir: Some(WORKSPACE.to_owned()),
            env: spec.env.clone(),
            labels,
            network: spec.network,
            tmpfs: vec![(crate::workspace::SECRETS_DIR.to_owned(), "mode=0755".to_owned())],
            ports: spec.ports.clone(),
            ..ContainerSpec::default()
        })
        .await?)
}

/// Puts the runner, the log directory and `files` (a tar stream, entries under `workspace/`)
/// into the container with one upload, then starts it.
pub async fn populate_and_start(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    config: &[u8],
    files: Option<ByteStream>,
) -> Result<()> {
    let config_dir = CONFIG_PATH.trim_start_matches('/').rsplit_once('/').map_or("", |(dir, _)| dir);
    let prefix = tar_prefix(&[
        (RUNNER_PATH.trim_start_matches('/'), RUNNER.as_bytes(), 0o755),
        // World-writable and sticky, like /tmp: processes run as the environment's user.
        (&format!("{}/", LOG_DIR.trim_start_matches('/')), b"", 0o1777),
        (&format!("{config_dir}/"), b"", 0o755),
        (CONFIG_PATH.trim_start_matches('/'), config, 0o444),
    ]);
    let head = futures::stream::once(async move { Ok(prefix) });
    // Without files, the end-of-archive blocks the prefix left out.
    let rest = files.unwrap_or_else(|| {
        let end = Bytes::from_static(&[0u8; 1024]);
        Box::pin(futures::stream::once(async move { Ok(end) }))
    });
    let tar: ByteStream = Box::pin(head.chain(rest));
    engine.upload(container, "/", tar).await?;
    engine.start(container).await?;
    Ok(())
}

/// How `start` ended, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Exited(i64),
    /// Still running after the wait: a background service.
    Running,
}

/// Runs `start` as `user` through the runner, waiting up to `wait` for it to finish. Its
/// output goes to its log, so the attached stream only tells when it ends.
pub async fn start(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    command: &str,
    user: &str,
    wait: Duration,
) -> Result<StartOutcome> {
    let spec = ExecSpec {
        cmd: vec!["sh".into(), RUNNER_PATH.into(), "start".into(), "once".into(), command.into()],
        user: Some(user.to_owned()),
        working_dir: Some(WORKSPACE.to_owned()),
        env: Vec::new(),
        ..ExecSpec::default()
    };
    let (exec, mut output) = engine.exec(container, &spec).await?;
    let ended = tokio::time::timeout(wait, async {
        while let Some(item) = output.next().await {
            item?;
        }
        Ok::<_, BuildError>(())
    })
    .await;
    match ended {
        Err(_elapsed) => Ok(StartOutcome::Running),
        Ok(result) => {
            result?;
            for _ in 0..100 {
                if let Some(code) = engine.exec_exit_code(&exec).await? {
                    return Ok(StartOutcome::Exited(code));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(StartOutcome::Running)
        }
    }
}

/// How terminals run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalMode {
    Tmux,
    /// Without tmux; with why, when the image has tmux but it would not start.
    Supervised {
        tmux_failed: Option<String>,
    },
}

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Starts each `(name, command)` as a long-running process as `user`, with one exec of the
/// runner.
pub async fn terminals(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    terminals: &[(String, String)],
    user: &str,
) -> Result<TerminalMode> {
    let mut cmd = vec!["sh".to_owned(), RUNNER_PATH.to_owned(), "launch".to_owned()];
    for (name, command) in terminals {
        cmd.push(name.clone());
        cmd.push(command.clone());
    }
    let spec = ExecSpec {
        cmd,
        user: Some(user.to_owned()),
        working_dir: Some(WORKSPACE.to_owned()),
        env: Vec::new(),
        ..ExecSpec::default()
    };
    let (code, _, output) = crate::pipeline::exec_to_end(engine, container, &spec, None).await?;
    let said = String::from_utf8_lossy(&output);
    let tmux_failed = said.lines().find_map(|l| l.strip_prefix("tmux cannot start: ")).map(str::to_owned);
    match (code, said.lines().last().map(str::trim)) {
        (0, Some("tmux")) => Ok(TerminalMode::Tmux),
        (0, Some("supervised")) => Ok(TerminalMode::Supervised { tmux_failed }),
        _ => Err(BuildError::Boot(format!(
            "the terminals could not be started (exit code {code}): {}",
            said.trim()
        ))),
    }
}

/// The TCP ports listening in the container's network namespace: from the engine when it
/// can tell directly, else from `/proc/net/tcp` and `tcp6` read through an exec.
pub async fn listening(engine: &Arc<dyn ContainerEngine>, container: &str) -> Result<Vec<u16>> {
    if let Some(ports) = engine.listening_ports(container).await? {
        return Ok(ports);
    }
    let spec = ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null".into()],
        user: Some("0:0".into()),
        ..ExecSpec::default()
    };
    let (_, _, output) = crate::pipeline::exec_to_end(engine, container, &spec, None).await?;
    Ok(listening_in(&String::from_utf8_lossy(&output)))
}

/// The local ports of the sockets in state LISTEN (`0A`) of `/proc/net/tcp`-format text
/// (IPv4 and IPv6 alike: the port is the hex after the last `:` of the local address).
pub fn listening_in(table: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if *state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Each terminal's state as its runner last wrote it, in the order of `names`: `running`, or
/// `exited CODE`; `unknown` when it has not written one.
pub async fn terminal_states(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    names: &[String],
) -> Result<Vec<String>> {
    let files: Vec<String> = names.iter().map(|n| quote(&format!("{LOG_DIR}/{n}.state"))).collect();
    let script =
        format!("for f in {}; do echo \"$(cat \"$f\" 2>/dev/null || echo unknown)\"; done", files.join(" "));
    let spec = ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script],
        user: Some("0:0".into()),
        ..ExecSpec::default()
    };
    let (_, _, output) = crate::pipeline::exec_to_end(engine, container, &spec, None).await?;
    let said = String::from_utf8_lossy(&output);
    let mut states: Vec<String> = said.lines().map(|l| l.trim().to_owned()).take(names.len()).collect();
    states.resize(names.len(), "unknown".to_owned());
    Ok(states)
}

/// The output of log `name` (a terminal, `start`), or of all logs, following when asked.
pub async fn logs(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    name: Option<&str>,
    follow: bool,
) -> Result<OutputStream> {
    let files = name.map_or_else(|| format!("{LOG_DIR}/*.log"), |n| format!("{LOG_DIR}/{}.log", quote(n)));
    // Following polls every 0.2 s rather than tail's default second (busybox's tail has no
    // inotify); a tail without fractional `-s` gets the default.
    let script = if follow {
        format!(
            "if tail -s 0.2 -n 0 /dev/null >/dev/null 2>&1; then exec tail -s 0.2 -n +1 -f {files}; \
             else exec tail -n +1 -f {files}; fi"
        )
    } else {
        format!("tail -n +1 {files}")
    };
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
    fn listening_sockets_of_proc_net_tcp() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:0BB8 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 2 1
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0BB9 00000000000000000000000000000000:0000 0A 0 0
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0";
        // 8080 (IPv4 and IPv6, once) and 3001 listen; 3000 is an established connection.
        assert_eq!(listening_in(table), vec![3001, 8080]);
        assert!(listening_in("garbage\n\n").is_empty());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a b"), "'a b'");
    }
}
