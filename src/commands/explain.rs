//! `envbuild explain A B`: which inputs differ between two builds.

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use envbuild_builder::keys::{self, KeyManifest};
use envbuild_cache::{Digest, Store, catalog, restore};

use crate::cli::{ExplainArgs, GlobalArgs};
use crate::{output, store, ui};

/// The key manifest behind `query`: a key with a record, or a snapshot.
async fn key_manifest(store: &dyn Store, query: &str) -> anyhow::Result<KeyManifest> {
    let id = match Digest::from_str(query).ok() {
        Some(key) => match catalog::read_key(store, &key).await? {
            Some(record) => record.snapshot,
            None => catalog::resolve(store, query).await?,
        },
        None => catalog::resolve(store, query).await?,
    };
    let manifest = restore::read_manifest(store, &id).await?;
    let doc = manifest
        .keys
        .with_context(|| format!("snapshot {id} records no build inputs (it was imported, not built)"))?;
    let keys: KeyManifest = serde_json::from_value(doc)
        .with_context(|| format!("the build inputs of snapshot {id} are unreadable"))?;
    Ok(keys)
}

pub async fn run(global: &GlobalArgs, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(global).await?;
    let a = key_manifest(&*store, &args.a).await?;
    let b = key_manifest(&*store, &args.b).await?;
    let differences = keys::explain(&a, &b);
    if args.json {
        output::json(&serde_json::json!({
            "a": { "system_key": a.system_key, "env_key": a.env_key },
            "b": { "system_key": b.system_key, "env_key": b.env_key },
            "differences": differences,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for d in &differences {
        let change = match (&d.before, &d.after) {
            (None, Some(after)) => format!("added ({after})"),
            (Some(before), None) => format!("removed (was {before})"),
            (Some(before), Some(after)) => format!("{before} -> {after}"),
            (None, None) => String::new(),
        };
        output::line(format!("{:<6} {}: {change}", d.key, d.input));
    }
    let same_system = a.system_key == b.system_key;
    ui::eprint_line(match (differences.len(), same_system) {
        (0, _) => "no input differs: both builds have the same keys".to_owned(),
        (n, true) => format!("{n} input(s) differ, all in the env key: the system image is shared"),
        (n, false) => format!("{n} input(s) differ; the system keys differ, so the system image was rebuilt"),
    });
    Ok(ExitCode::SUCCESS)
}
