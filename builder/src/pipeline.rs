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
    BuildEvent, BuildRequest, ByteStream, ContainerEngine, ContainerSpec, ImageConfig, Output,
};
use crate::error::{BuildError, Result};
use crate::passwd::{self, User};
use crate::plan::{Plan, SystemSource};

/// Label carrying the system key on system images.
pub const SYSTEM_KEY_LABEL: &str = "envbuild.system-key";
/// Label carrying the snapshot id on images imported from snapshots.
pub const SNAPSHOT_LABEL: &str = "envbuild.snapshot";
/// Where the repository goes in the container.
pub const WORKSPACE: &str = "/workspace";
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

/// Streams a container's output into `sink` until it stops; returns its exit code and tail.
async fn run_to_end(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    sink: &mut dyn OutputSink,
) -> Result<(i64, Tail)> {
    let mut output = engine.follow_output(container).await?;
    let mut tail = Tail::default();
    while let Some(item) = output.next().await {
        let chunk = item?;
        let bytes = match &chunk {
            Output::Stdout(b) | Output::Stderr(b) => b,
        };
        sink.output(bytes);
        tail.push(bytes);
    }
    let code = engine.wait(container).await?;
    Ok((code, tail))
}

/// Creates the install container on `image` with the repository at `/workspace` (owned by the
/// user), runs `install` with `sh -c` as the user, and streams its output into `sink`.
pub async fn run_install(
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    image: &SystemImage,
    extra_env: &BTreeMap<String, String>,
    cleanup: &Cleanup,
    sink: &mut dyn OutputSink,
) -> Result<InstallRun> {
    let started = Instant::now();
    let user_spec = plan.spec.user.clone().or_else(|| image.config.user.clone());
    let install = plan.spec.install.clone().filter(|i| !i.trim().is_empty());
    let env = plan.env.iter().chain(extra_env).map(|(k, v)| format!("{k}={v}")).collect();
    let spec = ContainerSpec {
        image: image.id.clone(),
        entrypoint: Some(Vec::new()),
        cmd: install
            .as_ref()
            .map_or_else(|| vec!["true".to_owned()], |i| vec!["sh".into(), "-c".into(), i.clone()]),
        user: user_spec.clone(),
        working_dir: Some(WORKSPACE.to_owned()),
        env,
        labels: BTreeMap::from([
            ("envbuild.role".to_owned(), "install".to_owned()),
            ("envbuild.env-key".to_owned(), plan.keys.env_key.to_string()),
        ]),
        network: plan.network,
        ..ContainerSpec::default()
    };
    let container = engine.create_container(&spec).await?;
    cleanup.container(&container);
    let user = resolve_user(engine, &container, user_spec.as_deref()).await?;
    let workspace = plan.inputs.clone().tar_stream("workspace/".to_owned(), (user.uid, user.gid));
    engine.upload(&container, "/", workspace).await?;
    if install.is_some() {
        engine.start(&container).await?;
        let (code, tail) = run_to_end(engine, &container, sink).await?;
        if code != 0 {
            return Err(BuildError::InstallFailed { code, tail: tail.text() });
        }
    }
    Ok(InstallRun { container, user, duration: started.elapsed() })
}

/// Runs install again in the same container (same file system), for the idempotency check.
/// Returns the exit code and the last lines of output.
pub async fn rerun_install(
    engine: &Arc<dyn ContainerEngine>,
    run: &InstallRun,
    sink: &mut dyn OutputSink,
) -> Result<(i64, String)> {
    engine.start(&run.container).await?;
    let (code, tail) = run_to_end(engine, &run.container, sink).await?;
    Ok((code, tail.text()))
}
