//! Builds development environments with the Docker Engine: the system image from a Dockerfile,
//! the install run with the repository at `/workspace`, the export of the result; and the
//! two cache keys that let an unchanged repository skip all of it. Knows nothing of the
//! snapshot store: the binary connects the export stream to it.
//!
//! # Layout
//! - [`engine`]: the [`ContainerEngine`](engine::ContainerEngine) trait; [`docker`]: its
//!   implementation on bollard (the only file that imports it); [`buildkit`]: the session a
//!   BuildKit build calls back into (build secrets); `overlay`: a container's changed paths,
//!   read from its layer on this host.
//! - [`keys`]: the system key, the env key and the manifest of their inputs; `explain`.
//! - [`dockerfile`], [`dockerignore`], [`context`]: what a build is made of.
//! - [`inputs`]: the repository's files as git tracks them.
//! - [`tree`]: file sets, their fingerprints and deterministic tar streams.
//! - [`passwd`]: who `user` is inside an image; [`oci`]: the image configuration a snapshot keeps.
//! - [`plan`]: what a build reads and its keys, before any work; [`pipeline`]: the build
//!   steps on the engine; [`cleanup`]: removing what they created, on every path.
//! - [`workspace`]: bringing `/workspace` to a commit; secrets and caches for install.
//! - [`boot`]: a booted environment: container, install, start, terminals, logs.
//! - `testing` (feature `testing`): an engine double that records calls and plays back a script.

pub mod boot;
pub mod buildkit;
pub mod cleanup;
mod context;
pub mod docker;
mod dockerfile;
mod dockerignore;
pub mod engine;
pub mod error;
pub mod inputs;
pub mod keys;
pub mod oci;
mod overlay;
pub mod passwd;
pub mod pipeline;
pub mod plan;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tree;
pub mod workspace;

pub use error::{BuildError, Result};
