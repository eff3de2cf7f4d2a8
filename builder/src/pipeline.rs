//! The build steps on the engine (DESIGN §1): the system image, the install run, and what
//! surrounds them (importing a snapshot as an image, resolving the user). The library's build
//! workflow strings them together with the store in between (the builder never touches the
//! store); [`crate::plan`] comes first and decides whether any of this runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envbuild_schema::Digest;
use futures::StreamExt;

use crate::cleanup::Cleanup;
use crate::engine::{
    BuildEvent, BuildRequest, ByteStream, ContainerEngine, ContainerSpec, ExecSpec, ImageConfig,
};
use crate::error::{BuildError, Result};
use crate::passwd::{self, User};
use crate::plan::{Plan, SystemSource};
use crate::workspace;

/// Label carrying the system key on system images.
pub const SYSTEM_KEY_LABEL: &str = "envbuild.system-key";
/// Label carrying the snapshot id on images imported from snapshots.
pub const SNAPSHOT_LABEL: &str = "envbuild.snapshot";
pub use crate::workspace::WORKSPACE;
/// Lines of output kept to show when a step fails.
const TAIL_LINES: usize = 30;

/// Where build and install output goes (the binary prints it, redacted).
pub trait OutputSink: Send {
    fn output(&mut self, chunk: &[u8]);
}

/// The tag of the cached system image for `system_key`.
pub fn system_tag(system_key: &Digest) -> String {
    format!("envbuild-system:{}", system_key.hex())
}

/// The tag of the image imported from snapshot `id`.
pub fn snapshot_tag(id: &Digest) -> String {
    format!("envbuild-snapshot:{}", id.hex())
}

/// The system image, built or found.
#[derive(Debug, Clone)]
pub struct SystemImage {
    pub id: String,
    pub config: ImageConfig,
    /// Found in the engine rather than built now.
    pub reused: bool,
    pub duration: Duration,
}

/// Keeps the last lines of output, for error messages.
#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: String,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.lines.push_back(line.trim_end().to_owned());
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
    }

    fn text(&self) -> String {
        let mut lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.trim().is_empty() {
            lines.push(self.partial.trim_end());
        }
        lines.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
    }
}

/// The system image: the base image itself, or the Dockerfile built (or the image cached under
/// its key, reused). `secrets` are the build secrets the Dockerfile's secret mounts read.
pub async fn ensure_system_image(
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    no_cache: bool,
    secrets: &BTreeMap<String, envbuild_schema::SecretString>,
    cleanup: &Cleanup,
    sink: &mut dyn OutputSink,
) -> Result<SystemImage> {
    let started = Instant::now();
    let context = match &plan.source {
        SystemSource::Dockerfile { context, .. } => context,
        SystemSource::Image { reference, id } => {
            let image = engine.image(id).await?.ok_or_else(|| BuildError::MissingBase {
                reference: reference.clone(),
                hint: format!("the engine no longer has {id}; pull or load `{reference}` again"),
            })?;
            return Ok(SystemImage {
                id: image.id,
                config: image.config,
                reused: true,
                duration: started.elapsed(),
            });
        }
        SystemSource::Snapshot { .. } => {
            return Err(BuildError::Invalid("this environment starts from a snapshot, not an image".into()));
        }
    };
    let tag = system_tag(&plan.keys.system_key);
    let key_label = plan.keys.system_key.to_string();
    if !no_cache
        && let Some(image) = engine.image(&tag).await?
        && image.labels.get(SYSTEM_KEY_LABEL) == Some(&key_label)
    {
        return Ok(SystemImage {
            id: image.id,
            config: image.config,
            reused: true,
            duration: started.elapsed(),
        });
    }
    let request = BuildRequest {
        context: context.files.clone().tar_stream(String::new(), (0, 0)),
        dockerfile: context.dockerfile.clone(),
        tag: tag.clone(),
        labels: BTreeMap::from([(SYSTEM_KEY_LABEL.to_owned(), key_label)]),
        build_args: plan.build_args.clone(),
        secrets: secrets.clone(),
        network: plan.network,
        no_cache,
    };
    let mut events = engine.build(request).await?;
    let mut tail = Tail::default();
    let mut built = None;
    let mut new_layers = Vec::new();
    let mut step_ran = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(BuildEvent::Output(line)) => {
                sink.output(line.as_bytes());
                tail.push(line.as_bytes());
                // The classic builder prints " ---> Running in <container>" for a step it runs
                // and " ---> <image>" when the step's layer is done.
                let trimmed = line.trim();
                if trimmed.starts_with("---> Running in") {
                    step_ran = true;
                } else if let Some(id) = trimmed.strip_prefix("---> ")
                    && step_ran
                    && id.len() == 12
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    new_layers.push(id.to_owned());
                    step_ran = false;
                }
            }
            Ok(BuildEvent::Note(note)) => {
                sink.output(format!("note: {note}\n").as_bytes());
            }
            Ok(BuildEvent::Built(id)) => built = Some(id),
            Err(e) => {
                // Layers this failed build made are not a cache anyone asked for.
                for layer in &new_layers {
                    cleanup.image(layer);
                }
                return Err(BuildError::BuildFailed {
                    detail: format!("{}\n{}", crate::error::chain(&e), tail.text()),
                });
            }
        }
    }
    let id = built.ok_or_else(|| BuildError::BuildFailed {
        detail: format!("the engine reported no image\n{}", tail.text()),
    })?;
    let image = engine
        .image(&id)
        .await?
        .ok_or_else(|| BuildError::Unexpected(format!("lost the image {id} it had just built")))?;
    Ok(SystemImage { id: image.id, config: image.config, reused: false, duration: started.elapsed() })
}

/// Imports a snapshot's root file system as an image (labelled with its id), or finds the one
/// imported before.
pub async fn import_snapshot_image(
    engine: &Arc<dyn ContainerEngine>,
    snapshot: &Digest,
    config: &ImageConfig,
    rootfs: impl FnOnce() -> ByteStream,
) -> Result<SystemImage> {
    let started = Instant::now();
    let tag = snapshot_tag(snapshot);
    let label = snapshot.to_string();
    if let Some(image) = engine.image(&tag).await?
        && image.labels.get(SNAPSHOT_LABEL) == Some(&label)
    {
        return Ok(SystemImage {
            id: image.id,
            config: image.config,
            reused: true,
            duration: started.elapsed(),
        });
    }
    let labels = BTreeMap::from([(SNAPSHOT_LABEL.to_owned(), label)]);
    let id = engine.import(rootfs(), &tag, config, &labels).await?;
    let image = engine
        .image(&id)
        .await?
        .ok_or_else(|| BuildError::Unexpected(format!("lost the image {id} it had just imported")))?;
    Ok(SystemImage { id: image.id, config: image.config, reused: false, duration: started.elapsed() })
}

/// The install container after install ran.
#[derive(Debug, Clone)]
pub struct InstallRun {
    pub container: String,
    pub user: User,
    pub duration: Duration,
    /// How install is run again (`--check-idempotent`).
    exec: ExecSpec,
}

/// Reads a small file from a container, `None` if it is not there.
async fn read_file(engine: &Arc<dyn ContainerEngine>, container: &str, path: &str) -> Result<Option<String>> {
    Ok(engine.download(container, path).await?.and_then(|tar| passwd::file_from_tar(&tar)))
}

/// Resolves the user install runs as, inside `container`.
pub async fn resolve_user(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    spec: Option<&str>,
) -> Result<User> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else { return Ok(User::root()) };
    let (passwd, group) = futures::try_join!(
        read_file(engine, container, "/etc/passwd"),
        read_file(engine, container, "/etc/group")
    )?;
    passwd::resolve(spec, &passwd.unwrap_or_default(), &group.unwrap_or_default())
}

/// Runs a command in `container` to its end, streaming its output to `sink` (when given) and
/// keeping its last lines; returns its exit code, the tail, and the output when no sink took
/// it.
pub async fn exec_to_end(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    spec: &ExecSpec,
    mut sink: Option<&mut dyn OutputSink>,
) -> Result<(i64, String, Vec<u8>)> {
    let (exec, mut output) = engine.exec(container, spec).await?;
    let mut tail = Tail::default();
    let mut captured = Vec::new();
    while let Some(item) = output.next().await {
        let chunk = item?;
        let bytes = chunk.bytes();
        tail.push(bytes);
        match sink.as_deref_mut() {
            Some(sink) => sink.output(bytes),
            None => captured.extend_from_slice(bytes),
        }
    }
    // The output ends when the process does; its code may take a moment to be recorded.
    for _ in 0..100 {
        if let Some(code) = engine.exec_exit_code(&exec).await? {
            return Ok((code, tail.text(), captured));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BuildError::Unexpected("did not report the exit code of a command in the environment".into()))
}

/// Writes `secrets` to the secrets file of the running `container` (a tmpfs), readable by
/// `user` alone: the values travel on the standard input of a process inside the container,
/// never in a configuration. With no secrets, nothing is written (an old file is emptied).
pub async fn write_secrets(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    user: &User,
    secrets: &BTreeMap<String, envbuild_schema::SecretString>,
) -> Result<()> {
    let writer = ExecSpec {
        cmd: workspace::write_secrets_command(user.uid, user.gid),
        user: Some("0:0".into()),
        stdin: Some(workspace::secrets_file(secrets)),
        ..ExecSpec::default()
    };
    let (code, tail, _) = exec_to_end(engine, container, &writer, None).await?;
    if code != 0 {
        return Err(BuildError::Unexpected(format!(
            "could not place the secrets in the container (exit code {code}): {tail}"
        )));
    }
    Ok(())
}

/// A container that runs nothing but a keep-alive, so its commands run as execs: works with
/// any shell, busybox's included (no `sleep infinity`).
pub const KEEP_ALIVE: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

/// What install runs with, beside the plan.
#[derive(Debug, Clone, Default)]
pub struct InstallSetup {
    /// The secrets install sees, delivered through a tmpfs file (see `workspace`).
    pub secrets: BTreeMap<String, envbuild_schema::SecretString>,
    /// Paths the parent's `/workspace` tracked that this commit does not: removed before
    /// install, as a checkout would.
    pub remove: Vec<String>,
    /// A volume for package-manager caches, mounted at `workspace::CACHE_DIR`.
    pub cache_volume: Option<String>,
    /// The checkpoint's `/workspace`, when install starts from one: tracked files it already
    /// holds as the upload would write them are not sent again.
    pub checkpoint: Option<Arc<workspace::Checkpoint>>,
}

/// Creates the install container on `image` (the system image, or the last checkpoint) with
/// the repository at `/workspace` owned by the user, gives install its secrets, runs it with
/// `sh -c` as the user, and streams its output into `sink`.
pub async fn run_install(
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    image: &SystemImage,
    setup: &InstallSetup,
    cleanup: &Cleanup,
    sink: &mut dyn OutputSink,
) -> Result<InstallRun> {
    let started = Instant::now();
    let user_spec = plan.spec.user.clone().or_else(|| image.config.user.clone());
    let install = plan.spec.install.clone().filter(|i| !i.trim().is_empty());
    let spec = ContainerSpec {
        image: image.id.clone(),
        entrypoint: Some(Vec::new()),
        cmd: vec!["sh".into(), "-c".into(), KEEP_ALIVE.into()],
        user: Some("0:0".into()),
        working_dir: Some(WORKSPACE.to_owned()),
        labels: BTreeMap::from([
            ("envbuild.role".to_owned(), "install".to_owned()),
            ("envbuild.env-key".to_owned(), plan.keys.env_key.to_string()),
        ]),
        network: plan.network,
        volumes: setup.cache_volume.iter().map(|v| (v.clone(), workspace::CACHE_DIR.to_owned())).collect(),
        tmpfs: vec![(workspace::SECRETS_DIR.to_owned(), "mode=0755".to_owned())],
        ..ContainerSpec::default()
    };
    let container = engine.create_container(&spec).await?;
    cleanup.container(&container);
    let user = resolve_user(engine, &container, user_spec.as_deref()).await?;
    let send = match setup.checkpoint.clone() {
        Some(checkpoint) => {
            let (files, owner) = (plan.workspace.clone(), (user.uid, user.gid));
            tokio::task::spawn_blocking(move || workspace::changed_since(&files, &checkpoint.files, owner))
                .await
                .map_err(|e| {
                    BuildError::Unexpected(format!(
                        "comparison of the repository with the checkpoint stopped: {e}"
                    ))
                })?
        }
        None => plan.workspace.clone(),
    };
    let files = workspace::upload(
        &plan.workspace,
        setup.checkpoint.as_deref(),
        send,
        (user.uid, user.gid),
        &setup.remove,
        setup.cache_volume.is_some(),
    );
    engine.upload(&container, "/", files).await?;
    engine.start(&container).await?;
    if !setup.secrets.is_empty() {
        write_secrets(engine, &container, &user, &setup.secrets).await?;
    }
    let mut env: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if setup.cache_volume.is_some() {
        env.extend(workspace::cache_env());
    }
    let exec = ExecSpec {
        cmd: workspace::with_prelude(install.as_deref().unwrap_or("true")),
        user: Some(user.engine_spec()),
        working_dir: Some(WORKSPACE.to_owned()),
        env,
        stdin: None,
    };
    let (code, tail, _) = exec_to_end(engine, &container, &exec, Some(sink)).await?;
    if code != 0 {
        return Err(BuildError::InstallFailed { code, tail });
    }
    Ok(InstallRun { container, user, duration: started.elapsed(), exec })
}

/// Runs install again in the same container (same file system), for the idempotency check.
/// Returns the exit code and the last lines of output.
pub async fn rerun_install(
    engine: &Arc<dyn ContainerEngine>,
    run: &InstallRun,
    sink: &mut dyn OutputSink,
) -> Result<(i64, String)> {
    let (code, tail, _) = exec_to_end(engine, &run.container, &run.exec, Some(sink)).await?;
    Ok((code, tail))
}

/// The tag of the checkpoint image of snapshot `id`: its install container, committed.
pub fn checkpoint_tag(id: &Digest) -> String {
    format!("envbuild-checkpoint:{}", id.hex())
}

/// Label carrying the snapshot id on checkpoint images.
pub const CHECKPOINT_LABEL: &str = "envbuild.checkpoint";

/// Commits the install container as the checkpoint of snapshot `id`, with the system image's
/// configuration (never the container's), so the next build of the repository can start from
/// it without importing the snapshot.
pub async fn commit_checkpoint(
    engine: &Arc<dyn ContainerEngine>,
    run: &InstallRun,
    id: &Digest,
    config: &ImageConfig,
) -> Result<String> {
    let labels = BTreeMap::from([(CHECKPOINT_LABEL.to_owned(), id.to_string())]);
    Ok(engine.commit(&run.container, &checkpoint_tag(id), config, &labels).await?)
}
