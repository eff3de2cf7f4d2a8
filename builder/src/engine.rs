//! The container engine, as the builder needs it: a small trait, so the pipeline can be tested
//! with a scripted engine and so that `docker` (the only implementation, on bollard) stays in
//! one file.
//!
//! Streams (build output, container output, exported file systems) are handed out as boxed
//! streams; callers drain them and treat every item as possibly fatal. Operations that create
//! something (images, containers) register it with the caller's [`crate::cleanup::Cleanup`]
//! themselves, never the engine.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};

/// A stream of bytes from the engine.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>;
/// Output lines of a build or a container, as they arrive.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>>;

/// A cause kept as the source of an [`EngineError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// The engine failed, or cannot be reached. The cause (the client's error) is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {endpoint}\nhint: {hint}")]
    Unreachable {
        endpoint: String,
        hint: String,
        #[source]
        source: Cause,
    },
    /// The request failed on its way (transport, protocol, or an error answer).
    #[error("the Docker engine could not {operation}")]
    Failed {
        operation: String,
        #[source]
        source: Cause,
    },
    /// The engine answered, and its answer is a failure it describes (a build step failed).
    #[error("the Docker engine could not {operation}: {message}")]
    Rejected { operation: String, message: String },
    #[error("{what} `{name}` does not exist in the Docker engine")]
    NotFound { what: &'static str, name: String },
    /// The OCI runtime (runc) or a tool beside it (pasta, ip, mount) failed, and said why.
    #[error("the container runtime could not {operation}: {message}")]
    Runtime { operation: String, message: String },
    /// An operation this engine does not have (the runc runtime builds no images).
    #[error("the {engine} engine cannot {operation}")]
    Unsupported { engine: &'static str, operation: &'static str },
}

/// One piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

impl Output {
    pub fn bytes(&self) -> &Bytes {
        match self {
            Output::Stdout(b) | Output::Stderr(b) => b,
        }
    }
}

/// How containers and builds reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network (the default for builds: the default bridge may be missing).
    #[default]
    Host,
    /// No network at all.
    None,
    /// A network namespace of its own with outbound access and its ports published on the
    /// host (the runc runtime, through pasta). The Docker engine, whose bridge needs the
    /// iptables rules it may not have, gives the host's network instead.
    Private,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Private => "private",
        }
    }

    /// Docker's network mode.
    pub fn docker_mode(self) -> &'static str {
        match self {
            Network::Host | Network::Private => "host",
            Network::None => "none",
        }
    }
}

/// A container port published on a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
}

/// A build of a Dockerfile with the classic builder.
#[allow(missing_debug_implementations)] // holds a stream
pub struct BuildRequest {
    /// The build context as a tar stream (already filtered by `.dockerignore`).
    pub context: ByteStream,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// `repo:tag` for the result.
    pub tag: String,
    pub labels: BTreeMap<String, String>,
    /// `--build-arg NAME=VALUE`, passed to the Dockerfile's `ARG`s.
    pub build_args: BTreeMap<String, String>,
    /// Build secrets by id, for `RUN --mount=type=secret` (BuildKit only).
    pub secrets: BTreeMap<String, envbuild_schema::SecretString>,
    pub network: Network,
    pub no_cache: bool,
}

/// What a container is created with.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: Option<String>,
    pub image: String,
    /// Replaces the image's entrypoint when set (an empty list clears it).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// `uid:gid` or a name, as `docker run --user` takes it.
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    /// Named volumes to mount: (volume, path in the container).
    pub volumes: Vec<(String, String)>,
    /// tmpfs mounts: (path, options such as `mode=1777`).
    pub tmpfs: Vec<(String, String)>,
    /// Ports to publish (a private network only).
    pub ports: Vec<PortMapping>,
}

/// The parts of an image's configuration envbuild keeps (OCI `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

/// An image the engine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    pub config: ImageConfig,
    pub labels: BTreeMap<String, String>,
    /// How many layers the image has.
    pub layers: usize,
}

/// A container the engine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    pub labels: BTreeMap<String, String>,
}

/// How a path of a container differs from its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

/// One path the container's own layer changed, as the engine reports it: absolute. Every
/// changed path is listed (the contents of an added directory too), and a directory whose
/// contents changed is listed as modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
}

/// A command run in a running container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
    /// Written to the command's standard input, which is then closed (a secret travels this
    /// way: never in the exec's configuration).
    pub stdin: Option<envbuild_schema::SecretString>,
}

#[async_trait]
pub trait ContainerEngine: Send + Sync + std::fmt::Debug {
    /// Where the engine is, for messages.
    fn endpoint(&self) -> String;

    /// The image `reference` (a tag or an id), or `None` if the engine does not have it.
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError>;

    /// Pulls `reference` from its registry; the image, or why it cannot be had.
    async fn pull(&self, reference: &str) -> Result<ImageInfo, EngineError>;

    /// Builds an image; the output stream ends with the build, and an `Err` item is a failed
    /// build. The id of the result is in the last [`BuildEvent::Built`].
    async fn build(&self, request: BuildRequest) -> Result<BuildStream, EngineError>;

    /// Creates an image from a root file system tar stream (`docker import`), with the OCI
    /// configuration `config` and `labels`; returns its id.
    async fn import(
        &self,
        rootfs: ByteStream,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError>;

    async fn remove_image(&self, id: &str) -> Result<(), EngineError>;

    /// The images carrying `label` (`key` or `key=value`): their ids and labels. An engine
    /// that cannot list images has none to show.
    async fn labelled_images(
        &self,
        _label: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, EngineError> {
        Ok(Vec::new())
    }

    /// Makes an image of the container's file system as it is now (`docker commit`), with
    /// exactly the configuration `config` (nothing of the container's own, such as its
    /// environment) and `labels`; returns its id.
    async fn commit(
        &self,
        container: &str,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError>;

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError>;

    /// Extracts a tar stream at `path` inside the container.
    async fn upload(&self, container: &str, path: &str, tar: ByteStream) -> Result<(), EngineError>;

    /// A tar stream of `path` inside the container; `None` if the path does not exist.
    async fn download(&self, container: &str, path: &str) -> Result<Option<Bytes>, EngineError>;

    async fn start(&self, container: &str) -> Result<(), EngineError>;

    /// The container's output, following it until the container stops.
    async fn follow_output(&self, container: &str) -> Result<OutputStream, EngineError>;

    /// Waits for the container to stop; returns its exit code.
    async fn wait(&self, container: &str) -> Result<i64, EngineError>;

    /// The container's root file system as a tar stream (`docker export`).
    async fn export(&self, container: &str) -> Result<ByteStream, EngineError>;

    /// The paths the container changed relative to its image (`docker diff`), or `None` from
    /// an engine that cannot tell; the caller then exports the whole file system.
    async fn changes(&self, _container: &str) -> Result<Option<Vec<FileChange>>, EngineError> {
        Ok(None)
    }

    /// A tar stream of `path` and everything under it in the container, names starting with
    /// the path's last component (`docker cp`); `None` if the path does not exist. Only asked
    /// of an engine that reports [`changes`](Self::changes).
    async fn archive(&self, _container: &str, path: &str) -> Result<Option<ByteStream>, EngineError> {
        Err(EngineError::Rejected {
            operation: format!("read `{path}` of a container"),
            message: "this engine does not report changed paths".into(),
        })
    }

    async fn stop(&self, container: &str, timeout_secs: i64) -> Result<(), EngineError>;

    /// Removes the container, running or not; succeeds if it is already gone.
    async fn remove_container(&self, container: &str) -> Result<(), EngineError>;

    /// Creates the named volume with `labels`, or leaves the one that exists.
    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), EngineError>;

    /// The names of the volumes carrying `label` (`key` or `key=value`).
    async fn volumes(&self, label: &str) -> Result<Vec<String>, EngineError>;

    /// Removes a volume; succeeds if it is already gone.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;

    /// Containers carrying `label` (`key` or `key=value`), running or not.
    async fn containers(&self, label: &str) -> Result<Vec<ContainerInfo>, EngineError>;

    /// Runs a command in a running container; its output, following until it exits.
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<(String, OutputStream), EngineError>;

    /// Starts a command in a running container without waiting for it; returns the exec id.
    async fn exec_detached(&self, container: &str, spec: &ExecSpec) -> Result<String, EngineError>;

    /// The exit code of a finished exec, `None` while it runs.
    async fn exec_exit_code(&self, exec: &str) -> Result<Option<i64>, EngineError>;

    /// The TCP ports something listens on in the container's network namespace, when the
    /// engine can tell without an exec; `None` sends the caller to read `/proc/net/tcp`
    /// through one.
    async fn listening_ports(&self, _container: &str) -> Result<Option<Vec<u16>>, EngineError> {
        Ok(None)
    }
}

/// What a build reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line of build output.
    Output(String),
    /// Something about how the build runs (the builder it falls back to).
    Note(String),
    /// The image was built, with this id.
    Built(String),
}

pub type BuildStream = Pin<Box<dyn Stream<Item = Result<BuildEvent, EngineError>> + Send>>;

/// A way to connect to the engine, run at most once.
type Connect =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Arc<dyn ContainerEngine>>> + Send>> + Send>;

/// Connects to the engine the first time it is needed, so work that may not need it (a cache
/// hit) never waits for it or fails without it.
pub struct LazyEngine {
    engine: tokio::sync::OnceCell<Arc<dyn ContainerEngine>>,
    connect: std::sync::Mutex<Option<Connect>>,
}

impl std::fmt::Debug for LazyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyEngine").field("engine", &self.engine.get()).finish_non_exhaustive()
    }
}

impl LazyEngine {
    pub fn new<F, Fut>(connect: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<dyn ContainerEngine>>> + Send + 'static,
    {
        let connect: Connect = Box::new(move || Box::pin(connect()));
        Self { engine: tokio::sync::OnceCell::new(), connect: std::sync::Mutex::new(Some(connect)) }
    }

    /// An engine that is already there (a test double, say).
    pub fn ready(engine: Arc<dyn ContainerEngine>) -> Self {
        Self { engine: tokio::sync::OnceCell::new_with(Some(engine)), connect: std::sync::Mutex::new(None) }
    }

    /// Whether anything has connected yet.
    pub fn connected(&self) -> bool {
        self.engine.initialized()
    }

    /// The engine, connecting now if this is the first call.
    pub async fn get(&self) -> Result<Arc<dyn ContainerEngine>> {
        let engine = self
            .engine
            .get_or_try_init(|| async {
                let connect = self
                    .connect
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .ok_or_else(|| {
                    BuildError::Unexpected("connection failed before; it is not tried twice".into())
                })?;
                connect().await
            })
            .await?;
        Ok(engine.clone())
    }
}
