//! envbuild's workflows: the library behind the `envbuild` binary, and what tests and other
//! programs call in-process.
//!
//! Each workflow takes a [`Session`] (the store, the engine, the keyring, where to report) and
//! a small options struct, and returns a typed report or a typed [`Error`]. None of them
//! prints: they report through the session's [`session::Reporter`], masked with every secret
//! they opened. The crates below do the work; this library joins them (the builder never
//! imports the cache, nor the cache the builder).
//!
//! # Layout
//! - [`session`]: what workflows run with, and how they report.
//! - [`config`]: a repository's environment.json, loaded for a workflow.
//! - [`build`]: build (or find) a repository's environment; its keys; `explain`;
//!   [`caches`]: the package-manager cache volumes install uses, and their bounds;
//!   [`delta`]: what an incremental install changed, read in proportion to the change.
//! - [`boot`]: boot a snapshot into an environment; [`envs`]: list, follow and stop them.
//! - [`export`]: a snapshot as a Docker image, a tar file, an OCI layout or an ext4 image.
//! - [`snapshots`]: import, list and restore snapshots; [`transfer`]: copy them between stores;
//!   [`retention`]: remove them (`rm`, `prune`).
//! - [`secrets`]: set, list and remove secrets; [`init`]: a starter config.
//! - [`serve`]: the HTTP service, `serve::run(listener, shutdown, ...)`.
//! - [`store`]: which store, and opening it; [`env`]: environment variables and defaults.
//! - [`bridge`]: async engine streams to blocking store readers and back.
//! - [`format`]: sizes, durations and ages for people.

pub mod boot;
pub mod bridge;
pub mod build;
pub mod caches;
pub mod config;
pub mod delta;
pub mod env;
pub mod envs;
pub mod error;
pub mod export;
pub mod format;
pub mod image;
pub mod init;
pub mod retention;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod session;
pub mod snapshots;
pub mod store;
pub mod transfer;

use std::sync::Arc;

use envbuild_builder::docker::DockerEngine;
use envbuild_builder::engine::{ContainerEngine, LazyEngine};

pub use error::{Error, Result};
pub use session::Session;

/// An engine handle that connects to the Docker engine (`DOCKER_HOST`, else the default
/// socket) when first used.
pub fn docker() -> LazyEngine {
    LazyEngine::new(|| async {
        let engine = DockerEngine::connect().await?;
        Ok(Arc::new(engine) as Arc<dyn ContainerEngine>)
    })
}
