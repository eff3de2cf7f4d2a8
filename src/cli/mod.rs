//! The binary's side: the command line ([`args`]), one module per command that turns
//! arguments into a workflow's options, calls it, and prints its report ([`commands`]), and
//! how things are printed ([`output`] on stdout, [`ui`] and [`progress`] on stderr). No
//! workflow logic lives here: that is the `envbuild` library.

pub mod args;
pub mod commands;
pub mod output;
pub mod progress;
pub mod ui;

use std::sync::Arc;

use anyhow::Context;
use envbuild::Session;
use envbuild::store::{self, StoreOptions};
use envbuild_secrets::Keyring;
use tokio_util::sync::CancellationToken;

pub use args::*;

/// How `--store` and its environment open a store.
pub fn store_options(global: &GlobalArgs, location: Option<&str>) -> anyhow::Result<StoreOptions> {
    let mut options = StoreOptions {
        location: location.map(str::to_owned).or_else(|| global.store.clone()),
        allow_unconditional_writes: global.allow_unconditional_writes,
        token: std::env::var(envbuild::env::TOKEN).ok(),
        ..StoreOptions::default()
    };
    if let Ok(max) = std::env::var(envbuild::env::CACHE_MAX) {
        options.cache_max_bytes = store::parse_size(&max)
            .with_context(|| format!("{} is not a size: `{max}`", envbuild::env::CACHE_MAX))?;
    }
    Ok(options)
}

/// Chunks handled at once: `--jobs`, or twice the number of cores.
pub fn jobs(global: &GlobalArgs) -> usize {
    global.jobs.map_or_else(envbuild_cache::ingest::default_concurrency, usize::from)
}

/// A session on the store the command line names, reporting on stderr, cancelled by Ctrl-C.
/// A local store that does not exist yet is created.
pub async fn session(global: &GlobalArgs, cancel: &CancellationToken) -> anyhow::Result<Session> {
    let store = store::open(&store_options(global, None)?).await?;
    Ok(session_on(global, store, cancel))
}

/// A session for a command that only reads the store: a local store must exist already.
pub async fn reading_session(global: &GlobalArgs, cancel: &CancellationToken) -> anyhow::Result<Session> {
    let options = StoreOptions { create: false, ..store_options(global, None)? };
    let store = store::open(&options).await?;
    Ok(session_on(global, store, cancel))
}

/// A session on `store`.
pub fn session_on(
    global: &GlobalArgs,
    store: Arc<dyn envbuild_cache::Store>,
    cancel: &CancellationToken,
) -> Session {
    Session {
        store,
        engine: Arc::new(envbuild::docker()),
        keyring: Keyring {
            master_key: envbuild::env::master_key_path(),
            kms_key_id: std::env::var(envbuild::env::KMS_KEY_ID).ok().filter(|k| !k.is_empty()),
        },
        jobs: jobs(global),
        reporter: Arc::new(ui::Stderr),
        cancel: cancel.clone(),
    }
}
