//! The build, step by step (DESIGN §1): plan and keys, the system image, the install run, the
//! export. The binary strings the steps together with the store in between (the builder never
//! touches the store), which keeps a warm hit free of any engine work: [`plan`] needs the engine
//! only to pin base images named by tag, and connects to it lazily.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::cleanup::Cleanup;
use crate::context::{self, BuildContext};
use crate::dockerfile;
use crate::engine::{
    BuildEvent, BuildRequest, ByteStream, ContainerEngine, ContainerSpec, ImageConfig, Network, Output,
};
use crate::error::{BuildError, Result};
use crate::inputs;
use crate::keys::{self, EnvInputs, KeyManifest, SystemInputs};
use crate::passwd::{self, User};
use crate::tree::FileSet;
use envbuild_schema::{EnvironmentSpec, LoadedConfig};

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

/// What the system layer is built from.
#[derive(Debug, Clone)]
pub enum SystemSource {
    Dockerfile {
        context: BuildContext,
        dockerfile_text: String,
    },
    /// A stored snapshot (`snapshot` in the config), by id.
    Snapshot {
        id: String,
    },
}

/// Everything known before any build work: inputs, keys, what to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub repo: PathBuf,
    pub spec: EnvironmentSpec,
    pub source: SystemSource,
    pub inputs: FileSet,
    pub keys: KeyManifest,
    /// Environment install sees: the non-secret variables, then the install secrets.
    pub env: BTreeMap<String, String>,
    pub network: Network,
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Narrow the install inputs to these globs.
    pub input_globs: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    /// Secret name → version, for secrets install sees.
    pub secret_versions: BTreeMap<String, String>,
    /// The id the config's `snapshot` resolved to, when the base is a snapshot.
    pub base_snapshot: Option<String>,
    pub network: Network,
}

/// A way to connect to the engine, run at most once.
type Connect =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Arc<dyn ContainerEngine>>> + Send>> + Send>;

/// Connects to the engine the first time it is needed.
pub struct LazyEngine {
    engine: Option<Arc<dyn ContainerEngine>>,
    connect: Option<Connect>,
}

impl std::fmt::Debug for LazyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyEngine")
            .field("engine", &self.engine)
            .field("connect", &self.connect.as_ref().map(|_| "pending"))
            .finish()
    }
}

impl LazyEngine {
    pub fn new<F, Fut>(connect: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<dyn ContainerEngine>>> + Send + 'static,
    {
        Self { engine: None, connect: Some(Box::new(move || Box::pin(connect()))) }
    }

    pub fn ready(engine: Arc<dyn ContainerEngine>) -> Self {
        Self { engine: Some(engine), connect: None }
    }

    /// Whether anything has connected yet.
    pub fn connected(&self) -> bool {
        self.engine.is_some()
    }

    pub async fn get(&mut self) -> Result<Arc<dyn ContainerEngine>> {
        if let Some(engine) = &self.engine {
            return Ok(engine.clone());
        }
        let connect = self
            .connect
            .take()
            .ok_or_else(|| BuildError::Input("the engine connection failed before".into()))?;
        let engine = connect().await?;
        self.engine = Some(engine.clone());
        Ok(engine)
    }
}

/// Reads the inputs and computes both keys. The engine is used only to pin bases named by tag.
pub async fn plan(loaded: &LoadedConfig, options: PlanOptions, engine: &mut LazyEngine) -> Result<Plan> {
    let spec = loaded
        .valid_spec()
        .cloned()
        .ok_or_else(|| BuildError::Input(format!("`{}` is not valid", loaded.file.display())))?;
    let paths = loaded
        .paths
        .clone()
        .ok_or_else(|| BuildError::Input(format!("`{}` cannot be read", loaded.file.display())))?;
    let platform = keys::host_platform();
    let (source, system) = if spec.build.is_some() {
        let (Some(dockerfile), Some(context_dir)) = (&paths.dockerfile, &paths.context) else {
            return Err(BuildError::Input("the Dockerfile or the build context is missing".into()));
        };
        let dockerfile_text = std::fs::read_to_string(dockerfile)
            .map_err(BuildError::io(format!("cannot read the Dockerfile `{}`", dockerfile.display())))?;
        let (dockerfile_path, context_dir, config) =
            (dockerfile.clone(), context_dir.clone(), paths.config_file.clone());
        let context =
            tokio::task::spawn_blocking(move || context::collect(&context_dir, &dockerfile_path, &config))
                .await
                .map_err(|e| BuildError::Input(format!("reading the build context failed: {e}")))??;
        let mut bases = BTreeMap::new();
        for base in dockerfile::base_images(&dockerfile_text, &options.build_args) {
            let id = if let Some(digest) = base.pinned_digest() {
                digest.to_owned()
            } else {
                let engine = engine.get().await?;
                engine.image(&base.0).await?.map(|image| image.id).ok_or_else(|| BuildError::MissingBase {
                    reference: base.0.clone(),
                    hint: format!(
                        "no registry may be reachable: load it (`docker pull {0}` or `docker load`), or pin it by digest (`{0}@sha256:...`)",
                        base.0
                    ),
                })?
            };
            bases.insert(base.0, id);
        }
        let system = SystemInputs {
            format: keys::SYSTEM_FORMAT.into(),
            dockerfile: Some(crate::tree::hash_text(&dockerfile_text)),
            context: context.files.fingerprints(),
            bases,
            base_snapshot: None,
            build_args: options.build_args.clone(),
            platform,
            user: spec.user.clone(),
        };
        (SystemSource::Dockerfile { context, dockerfile_text }, system)
    } else {
        let id = options.base_snapshot.clone().ok_or_else(|| {
            BuildError::Input("the config names a base snapshot, but it was not resolved".into())
        })?;
        let system = SystemInputs {
            format: keys::SYSTEM_FORMAT.into(),
            dockerfile: None,
            context: BTreeMap::new(),
            bases: BTreeMap::new(),
            base_snapshot: Some(id.clone()),
            build_args: BTreeMap::new(),
            platform,
            user: spec.user.clone(),
        };
        (SystemSource::Snapshot { id }, system)
    };
    let repo = paths.repo_root.clone();
    let globs = options.input_globs.clone();
    let inputs = {
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || inputs::collect(&repo, &globs))
            .await
            .map_err(|e| BuildError::Input(format!("reading the repository failed: {e}")))??
    };
    let env_inputs = EnvInputs {
        format: keys::ENV_FORMAT.into(),
        system_key: String::new(),
        install: spec.install.clone(),
        inputs: inputs.fingerprints(),
        env: options.env.clone(),
        secrets: options.secret_versions.clone(),
    };
    Ok(Plan {
        repo,
        spec,
        source,
        inputs,
        keys: KeyManifest::new(system, env_inputs),
        env: options.env,
        network: options.network,
    })
}

/// The tag of the cached system image for `system_key`.
pub fn system_tag(system_key: &str) -> String {
    format!("envbuild-system:{}", system_key.trim_start_matches("sha256:"))
}

/// The tag of the image imported from snapshot `id`.
pub fn snapshot_tag(id: &str) -> String {
    format!("envbuild-snapshot:{}", id.trim_start_matches("sha256:"))
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

/// Builds the system image from the Dockerfile, or reuses the one cached under its key.
pub async fn ensure_system_image(
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    no_cache: bool,
    cleanup: &Cleanup,
    sink: &mut dyn OutputSink,
) -> Result<SystemImage> {
    let started = Instant::now();
    let SystemSource::Dockerfile { context, .. } = &plan.source else {
        return Err(BuildError::Input("this environment starts from a snapshot, not a Dockerfile".into()));
    };
    let tag = system_tag(&plan.keys.system_key);
    if !no_cache
        && let Some(image) = engine.image(&tag).await?
        && image.labels.get(SYSTEM_KEY_LABEL) == Some(&plan.keys.system_key)
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
        labels: BTreeMap::from([(SYSTEM_KEY_LABEL.to_owned(), plan.keys.system_key.clone())]),
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
            Ok(BuildEvent::Built(id)) => built = Some(id),
            Err(e) => {
                // Layers this failed build made are not a cache anyone asked for.
                for layer in &new_layers {
                    cleanup.image(layer);
                }
                return Err(BuildError::BuildFailed { detail: format!("{e}\n{}", tail.text()) });
            }
        }
    }
    let id = built.ok_or_else(|| BuildError::BuildFailed {
        detail: format!("the engine reported no image\n{}", tail.text()),
    })?;
    let image = engine
        .image(&id)
        .await?
        .ok_or_else(|| BuildError::BuildFailed { detail: format!("the built image {id} vanished") })?;
    Ok(SystemImage { id: image.id, config: image.config, reused: false, duration: started.elapsed() })
}

/// Imports a snapshot's root file system as an image (labelled with its id), or finds the one
/// imported before.
pub async fn import_snapshot_image(
    engine: &Arc<dyn ContainerEngine>,
    snapshot: &str,
    config: &ImageConfig,
    rootfs: impl FnOnce() -> ByteStream,
) -> Result<SystemImage> {
    let started = Instant::now();
    let tag = snapshot_tag(snapshot);
    if let Some(image) = engine.image(&tag).await?
        && image.labels.get(SNAPSHOT_LABEL).map(String::as_str) == Some(snapshot)
    {
        return Ok(SystemImage {
            id: image.id,
            config: image.config,
            reused: true,
            duration: started.elapsed(),
        });
    }
    let labels = BTreeMap::from([(SNAPSHOT_LABEL.to_owned(), snapshot.to_owned())]);
    let id = engine.import(rootfs(), &tag, config, &labels).await?;
    let image = engine
        .image(&id)
        .await?
        .ok_or_else(|| BuildError::Input(format!("the imported image {id} vanished")))?;
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
            ("envbuild.env-key".to_owned(), plan.keys.env_key.clone()),
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
