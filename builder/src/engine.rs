//! The container engine, as the builder needs it: a small trait, so the pipeline can be tested
//! with a scripted engine and so that `docker` (the only implementation, on bollard) stays in
//! one file.
//!
//! Streams (build output, container output, exported file systems) are handed out as boxed
//! streams; callers drain them and treat every item as possibly fatal. Operations that create
//! something (images, containers) register it with the caller's [`crate::cleanup::Cleanup`]
//! themselves, never the engine.

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// A stream of bytes from the engine.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>;
/// Output lines of a build or a container, as they arrive.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>>;

/// The engine failed, or cannot be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {endpoint}: {detail}\nhint: {hint}")]
    Unreachable { endpoint: String, detail: String, hint: String },
    #[error("the Docker engine could not {operation}: {detail}")]
    Failed { operation: String, detail: String },
    #[error("{what} `{name}` does not exist in the Docker engine")]
    NotFound { what: &'static str, name: String },
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
    /// The host's network (the default: the default bridge may be missing).
    #[default]
    Host,
    /// No network at all.
    None,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
        }
    }
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

/// A command run in a running container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
}

#[async_trait]
pub trait ContainerEngine: Send + Sync + std::fmt::Debug {
    /// Where the engine is, for messages.
    fn endpoint(&self) -> String;

    /// The image `reference` (a tag or an id), or `None` if the engine does not have it.
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError>;

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

    async fn stop(&self, container: &str, timeout_secs: i64) -> Result<(), EngineError>;

    /// Removes the container, running or not; succeeds if it is already gone.
    async fn remove_container(&self, container: &str) -> Result<(), EngineError>;

    /// Containers carrying `label` (`key` or `key=value`), running or not.
    async fn containers(&self, label: &str) -> Result<Vec<ContainerInfo>, EngineError>;

    /// Runs a command in a running container; its output, following until it exits.
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<(String, OutputStream), EngineError>;

    /// Starts a command in a running container without waiting for it; returns the exec id.
    async fn exec_detached(&self, container: &str, spec: &ExecSpec) -> Result<String, EngineError>;

    /// The exit code of a finished exec, `None` while it runs.
    async fn exec_exit_code(&self, exec: &str) -> Result<Option<i64>, EngineError>;
}

/// What a build reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line of build output.
    Output(String),
    /// The image was built, with this id.
    Built(String),
}

pub type BuildStream = Pin<Box<dyn Stream<Item = Result<BuildEvent, EngineError>> + Send>>;
