//! The life of booted environments after `boot`, on either engine: listing them with their
//! ports and terminals, reading their logs (redacted with the secrets they were booted
//! with), running commands in them, stopping and removing them, and, for `gc`, removing what
//! an interrupted boot left.
//!
//! An environment on runc is found in the runtime directory; one on Docker by its labels.
//! `stop` of a runc environment ends its processes and frees its mount and network but keeps
//! what it wrote (its logs stay readable) until `rm`; Docker environments are removed by
//! `stop`, as before.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use envbuild_builder::boot;
use envbuild_builder::engine::{ContainerEngine, ContainerInfo, ExecSpec, PortMapping};
use envbuild_builder::{pipeline, workspace};
use envbuild_secrets::{Patterns, Redactor, Scope, records};
use futures::StreamExt;
use serde::Serialize;

use crate::build;
use crate::error::{Error, Result};
use crate::runtime::trees::{TreeInfo, Trees};
use crate::runtime::{self, Runc, inroot};
use crate::session::Session;

/// Bytes of a log read at once from a stopped environment.
const MAX_LOG_BYTES: u64 = 64 << 20;

/// A booted environment, as `ps` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentInfo {
    pub name: String,
    /// `runc` or `docker`.
    pub engine: &'static str,
    pub container: String,
    pub running: bool,
    pub snapshot: String,
    pub terminals: Vec<String>,
    /// Each terminal's state: `running`, `exited CODE`, or `unknown`.
    pub terminal_states: Vec<String>,
    pub ports: Vec<PortMapping>,
}

/// Where an environment is.
enum Found {
    Runc(Arc<Runc>, ContainerInfo),
    Docker(Arc<dyn ContainerEngine>, ContainerInfo),
}

impl Found {
    fn engine(&self) -> Arc<dyn ContainerEngine> {
        match self {
            Found::Runc(runc, _) => runc.clone(),
            Found::Docker(engine, _) => engine.clone(),
        }
    }

    fn info(&self) -> &ContainerInfo {
        match self {
            Found::Runc(_, info) | Found::Docker(_, info) => info,
        }
    }
}

/// The runc runtime, when this host has a runtime directory.
fn runc() -> Option<Arc<Runc>> {
    let layout = runtime::Layout::from_env();
    layout.envs().is_dir().then(|| Arc::new(Runc::new(layout)))
}

/// Environments on runc and on Docker (when it answers) whose labels match `filter`.
async fn all(session: &Session, filter: &str) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    if let Some(runc) = runc() {
        for info in runc.containers(filter).await? {
            out.push(Found::Runc(runc.clone(), info));
        }
    }
    if let Ok(engine) = session.engine.get().await {
        for info in engine.containers(filter).await? {
            out.push(Found::Docker(engine.clone(), info));
        }
    }
    Ok(out)
}

async fn find(session: &Session, name: &str) -> Result<Found> {
    all(session, &format!("{}={name}", boot::NAME_LABEL)).await?.into_iter().next().ok_or_else(|| {
        Error::Failed(format!("there is no environment named `{name}`\nhint: `envbuild ps` lists them"))
    })
}

/// Whether an environment named `name` exists on either engine.
pub async fn exists(session: &Session, name: &str) -> Result<bool> {
    Ok(!all(session, &format!("{}={name}", boot::NAME_LABEL)).await?.is_empty())
}

fn label(info: &ContainerInfo, key: &str) -> String {
    info.labels.get(key).cloned().unwrap_or_default()
}

/// A comma-separated label as its parts.
fn parts(info: &ContainerInfo, key: &str) -> Vec<String> {
    label(info, key).split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

fn ports_of(info: &ContainerInfo) -> Vec<PortMapping> {
    parts(info, boot::PORTS_LABEL)
        .iter()
        .filter_map(|p| {
            let (host, container) = p.split_once(':')?;
            Some(PortMapping { host: host.parse().ok()?, container: container.parse().ok()? })
        })
        .collect()
}

/// Each terminal's state, as its runner wrote it.
async fn terminal_states(found: &Found, terminals: &[String]) -> Vec<String> {
    match found {
        Found::Runc(..) | Found::Docker(..) if !found.info().running => {
            vec!["stopped".to_owned(); terminals.len()]
        }
        Found::Runc(runc, info) => {
            let files = runc.files(&info.name);
            terminals
                .iter()
                .map(|t| {
                    inroot::read_tail(&files, &format!("{}/{t}.state", boot::LOG_DIR), 256)
                        .ok()
                        .flatten()
                        .map_or_else(
                            || "unknown".to_owned(),
                            |b| String::from_utf8_lossy(&b).trim().to_owned(),
                        )
                })
                .collect()
        }
        Found::Docker(engine, info) => boot::terminal_states(engine, &info.id, terminals)
            .await
            .unwrap_or_else(|_| vec!["unknown".to_owned(); terminals.len()]),
    }
}

/// Every booted environment, by name.
pub async fn list(session: &Session) -> Result<Vec<EnvironmentInfo>> {
    let mut out = Vec::new();
    for found in all(session, boot::NAME_LABEL).await? {
        let info = found.info();
        let terminals = parts(info, boot::TERMINALS_LABEL);
        let states = terminal_states(&found, &terminals).await;
        out.push(EnvironmentInfo {
            name: label(info, boot::NAME_LABEL),
            engine: if matches!(found, Found::Runc(..)) { "runc" } else { "docker" },
            container: info.id.clone(),
            running: info.running,
            snapshot: label(info, boot::SNAPSHOT_LABEL),
            terminals,
            terminal_states: states,
            ports: ports_of(info),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Writes the output of an environment's terminal (`start`, or all when `None`) to `out`,
/// redacted, following it when asked.
pub async fn logs(
    session: &Session,
    name: &str,
    terminal: Option<&str>,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let found = find(session, name).await?;
    let info = found.info().clone();
    if let Some(wanted) = terminal {
        let mut known = parts(&info, boot::TERMINALS_LABEL);
        known.push("start".to_owned());
        if !known.iter().any(|k| k == wanted) {
            return Err(Error::Failed(format!(
                "the environment `{name}` has no terminal `{wanted}`\nhint: its logs are {}",
                known.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // The logs are redacted with the secrets the environment was booted with.
    let mut redactor = Redactor::new(patterns(session, &info).await?);
    let write = |out: &mut (dyn Write + Send), bytes: &[u8]| {
        out.write_all(bytes).and_then(|()| out.flush()).map_err(Error::io("cannot write the logs"))
    };
    match &found {
        // Read from the host (a stopped environment's logs are in its upper directory),
        // unless following a running one, which its own `tail` does best.
        Found::Runc(runc, _) if !(follow && info.running) => {
            let files = runc.files(name);
            let names: Vec<String> = match terminal {
                Some(t) => vec![format!("{t}.log")],
                None => inroot::list(&files, boot::LOG_DIR)
                    .map_err(Error::io(format!("cannot read the logs of `{name}`")))?
                    .into_iter()
                    .filter(|n| std::path::Path::new(n).extension().is_some_and(|e| e == "log"))
                    .collect(),
            };
            for file in names {
                let path = format!("{}/{file}", boot::LOG_DIR);
                let bytes = inroot::read_tail(&files, &path, MAX_LOG_BYTES)
                    .map_err(Error::io(format!("cannot read `{path}` of `{name}`")))?
                    .unwrap_or_default();
                write(out, &redactor.push(&bytes))?;
            }
        }
        _ => {
            if !info.running {
                return Err(Error::Failed(format!("the environment `{name}` is not running")));
            }
            let mut stream = boot::logs(&found.engine(), &info.id, terminal, follow).await?;
            while let Some(item) = stream.next().await {
                let chunk = item?;
                write(out, &redactor.push(chunk.bytes()))?;
            }
        }
    }
    write(out, &redactor.finish())
}

/// Stops an environment: on runc its processes, mount and network go and what it wrote stays
/// (logs) until [`remove`]; a Docker environment's container is removed.
pub async fn stop(session: &Session, name: &str) -> Result<()> {
    match find(session, name).await? {
        Found::Runc(runc, info) => runc.stop(&info.id, 10).await?,
        Found::Docker(engine, info) => engine.remove_container(&info.id).await?,
    }
    Ok(())
}

/// Removes the runc environment `name` and everything made for it, if there is one: no store
/// or engine is needed for that. Whether there was.
pub async fn remove_runc(name: &str) -> Result<bool> {
    let Some(runc) = runc() else { return Ok(false) };
    if runc.record(name).is_none() {
        return Ok(false);
    }
    runc.remove_container(name).await?;
    Ok(true)
}

/// Removes an environment and everything made for it.
pub async fn remove(session: &Session, name: &str) -> Result<()> {
    let found = find(session, name).await?;
    found.engine().remove_container(&found.info().id).await?;
    Ok(())
}

/// Runs `cmd` in environment `name` as its user in `/workspace`, with its secrets, attached
/// to this process's standard streams (a terminal when `tty`): `envbuild exec` and `shell`.
/// Its exit code.
pub async fn exec(session: &Session, name: &str, cmd: &[String], tty: bool) -> Result<i32> {
    let found = find(session, name).await?;
    let info = found.info().clone();
    if !info.running {
        return Err(Error::Failed(format!(
            "the environment `{name}` is not running\nhint: boot it again, or read its logs with `envbuild logs {name}`"
        )));
    }
    let engine = found.engine();
    let config = engine.download(&info.id, boot::CONFIG_PATH).await?;
    let user_spec = config
        .and_then(|tar| envbuild_builder::passwd::file_from_tar(&tar))
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .and_then(|c| c.get("user").and_then(|u| u.as_str()).map(str::to_owned));
    let user = pipeline::resolve_user(&engine, &info.id, user_spec.as_deref()).await?;
    // The prelude reads the secrets file into the command's environment, then runs it.
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("{}\nexec \"$@\"", workspace::PRELUDE),
        "envbuild".to_owned(),
    ];
    argv.extend(cmd.iter().cloned());
    match &found {
        // A terminal is the user's own: what they print there is theirs to see.
        Found::Runc(runc, _) if tty => {
            let mut command =
                runc.exec_command(&info.id, &user.engine_spec(), pipeline::WORKSPACE, &argv, true)?;
            let status = command.status().await.map_err(Error::io("cannot run runc"))?;
            Ok(status.code().unwrap_or(1))
        }
        Found::Runc(runc, _) => {
            // The patterns first: nothing runs whose output could not be masked.
            let patterns = patterns(session, &info).await?;
            let mut command =
                runc.exec_command(&info.id, &user.engine_spec(), pipeline::WORKSPACE, &argv, false)?;
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let mut child = command.spawn().map_err(Error::io("cannot run runc"))?;
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(Error::Failed("the command's output pipes are missing".into()));
            };
            let (mut out_mask, mut err_mask) = (Redactor::new(patterns.clone()), Redactor::new(patterns));
            let (a, b) = tokio::join!(
                masked_copy(stdout, &mut out_mask, std::io::stdout()),
                masked_copy(stderr, &mut err_mask, std::io::stderr())
            );
            a?;
            b?;
            let status = child.wait().await.map_err(Error::io("cannot run runc"))?;
            Ok(status.code().unwrap_or(1))
        }
        Found::Docker(engine, _) => {
            let spec = ExecSpec {
                cmd: argv,
                user: Some(user.engine_spec()),
                working_dir: Some(pipeline::WORKSPACE.to_owned()),
                ..ExecSpec::default()
            };
            let patterns = patterns(session, &info).await?;
            let mut redactors = (Redactor::new(patterns.clone()), Redactor::new(patterns));
            let (exec, mut output) = engine.exec(&info.id, &spec).await?;
            while let Some(item) = output.next().await {
                match item? {
                    envbuild_builder::engine::Output::Stdout(b) => {
                        write_out(&mut std::io::stdout(), &redactors.0.push(&b))?;
                    }
                    envbuild_builder::engine::Output::Stderr(b) => {
                        write_out(&mut std::io::stderr(), &redactors.1.push(&b))?;
                    }
                }
            }
            write_out(&mut std::io::stdout(), &redactors.0.finish())?;
            write_out(&mut std::io::stderr(), &redactors.1.finish())?;
            for _ in 0..100 {
                if let Some(code) = engine.exec_exit_code(&exec).await? {
                    return Ok(i32::try_from(code).unwrap_or(1));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(Error::Failed("the engine did not report the command's exit code".into()))
        }
    }
}

/// The secret patterns of the scopes environment `info` was booted in: what its output is
/// masked with.
async fn patterns(session: &Session, info: &ContainerInfo) -> Result<Patterns> {
    let scopes: Vec<Scope> = parts(info, boot::SCOPES_LABEL).iter().filter_map(|s| s.parse().ok()).collect();
    let found = records::list(&*session.store, &scopes).await?;
    let loaded = build::open_secrets(session, found).await.map_err(|e| {
        e.context("output is shown only redacted, and the secrets to redact it with cannot be read")
    })?;
    Ok(records::patterns(&loaded)?)
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).and_then(|()| out.flush()).map_err(Error::io("cannot write the output"))
}

/// Copies a child's pipe to `out`, masked, as it arrives.
async fn masked_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mask: &mut Redactor,
    mut out: impl Write,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut from, &mut buf)
            .await
            .map_err(Error::io("cannot read the output"))?;
        if n == 0 {
            break;
        }
        write_out(&mut out, &mask.push(&buf[..n]))?;
    }
    write_out(&mut out, &mask.finish())
}

/// Everything the runc runtime has made on this host, for `ps --all`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    pub root: PathBuf,
    /// Environment directories, with whether each is complete, stopped, or a crash's leftover.
    pub environments: Vec<EnvironmentDir>,
    pub trees: Vec<TreeInfo>,
    /// Overlay mounts under the runtime directory.
    pub mounts: Vec<PathBuf>,
    pub network_namespaces: Vec<String>,
    /// pasta processes the environments' records name.
    pub pasta: Vec<u32>,
    /// runc containers.
    pub containers: Vec<String>,
    /// The Docker engine's images of snapshots (`--engine docker` boots), when it answers.
    pub docker_images: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentDir {
    pub name: String,
    pub state: &'static str,
}

/// What the runc runtime (and the Docker engine, for its boots) has made on this host.
pub async fn resources(session: &Session) -> Result<Resources> {
    let layout = runtime::Layout::from_env();
    let runc = Runc::new(layout.clone());
    let root = layout.root().to_path_buf();
    let records = runc.records();
    let environments = records
        .iter()
        .map(|r| EnvironmentDir {
            name: r.name.clone(),
            state: if r.stopped {
                "stopped"
            } else if r.complete {
                "booted"
            } else if runtime::alive(r.maker) {
                "booting"
            } else {
                "interrupted"
            },
        })
        .chain(runc.unrecorded().into_iter().map(|name| EnvironmentDir { name, state: "unrecorded" }))
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(&root))
        .collect();
    let containers = runc.container_ids().await?;
    let mut docker_images = Vec::new();
    if let Ok(engine) = session.engine.get().await
        && let Ok(images) = engine.labelled_images(pipeline::SNAPSHOT_LABEL).await
    {
        docker_images = images.into_iter().map(|(image, _)| image).collect();
    }
    Ok(Resources {
        docker_images,
        environments,
        trees: Trees::new(layout).list(),
        mounts,
        network_namespaces: runtime::net::list_netns(&runc.netns_prefix()),
        pasta: records.iter().filter_map(|r| r.pasta_pid).filter(|p| runtime::alive(*p)).collect(),
        containers,
        root,
    })
}

/// Removes the runc trees of snapshots `ids` that no environment uses, and the file objects
/// only they linked; what went, for messages.
pub fn remove_trees(ids: &[envbuild_cache::SnapshotId]) -> Vec<String> {
    let layout = runtime::Layout::from_env();
    if !layout.trees().is_dir() {
        return Vec::new();
    }
    let runc = Runc::new(layout.clone());
    let in_use: HashSet<PathBuf> = runc.records().into_iter().map(|r| r.lower).collect();
    let trees = Trees::new(layout);
    let mut gone = Vec::new();
    for id in ids {
        let path = trees.path(id);
        if !path.is_dir() || in_use.contains(&path) {
            continue;
        }
        match trees.remove(&path) {
            Ok(()) => gone.push(format!("tree {id}")),
            Err(e) => tracing::info!("kept the tree of {id}: {e}"),
        }
    }
    if !gone.is_empty() {
        trees.sweep_objects();
    }
    gone
}

/// What [`sweep`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Swept {
    /// Environments an interrupted boot left.
    pub environments: Vec<String>,
    /// Network namespaces no environment records.
    pub network_namespaces: Vec<String>,
    /// Trees removed to fit the bound.
    pub trees: Vec<String>,
    /// Bytes of file objects no tree links any more.
    pub object_bytes: u64,
}

/// Removes what interrupted boots left (environments whose maker died before they were
/// complete, network namespaces nothing records), then the least recently used trees no
/// environment uses beyond the bound, and unlinked objects: the runtime's part of `gc`.
pub async fn sweep() -> Result<Swept> {
    let layout = runtime::Layout::from_env();
    if !layout.root().is_dir() {
        return Ok(Swept::default());
    }
    let runc = Runc::new(layout.clone());
    let mut swept = Swept::default();
    for record in runc.records() {
        if !record.complete && !record.stopped && !runtime::alive(record.maker) {
            runc.teardown(&record.name, true).await?;
            swept.environments.push(record.name);
        }
    }
    for name in runc.unrecorded() {
        let dir = layout.env(&name);
        // Nothing was mounted before the record was first written.
        std::fs::remove_dir_all(&dir).map_err(Error::io(format!("cannot remove `{}`", dir.display())))?;
        swept.environments.push(name);
    }
    let records = runc.records();
    let known: HashSet<String> = records.iter().filter_map(|r| r.netns.clone()).collect();
    for netns in runtime::net::list_netns(&runc.netns_prefix()) {
        if !known.contains(&netns) {
            runtime::net::delete_netns(&netns).await?;
            swept.network_namespaces.push(netns);
        }
    }
    let in_use: HashSet<PathBuf> = records.iter().map(|r| r.lower.clone()).collect();
    let (trees, object_bytes) = Trees::new(layout).evict(&in_use)?;
    swept.trees = trees.into_iter().map(|t| t.snapshot).collect();
    swept.object_bytes = object_bytes;
    Ok(swept)
}
