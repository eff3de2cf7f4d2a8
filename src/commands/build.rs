//! `envbuild build`: a repository's environment.json into a snapshot, or the one already built.
//!
//! 1. validate the config and compute both keys (no engine unless a base is named by tag);
//! 2. a stored env key is a hit: print the snapshot id, touch nothing else;
//! 3. otherwise build the system image (or reuse it when only the env key changed), run install
//!    with the repository at `/workspace`, export the container straight into the store
//!    (no temporary file), and record the key.
//!
//! Containers and failed builds' layers are removed on every path, Ctrl-C included.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use envbuild_builder::cleanup::Cleanup;
use envbuild_builder::docker::DockerEngine;
use envbuild_builder::engine::{ContainerEngine, ImageConfig};
use envbuild_builder::oci;
use envbuild_builder::pipeline::{self, LazyEngine, Plan, PlanOptions, SystemImage, SystemSource};
use envbuild_builder::secrets::When;
use envbuild_cache::catalog::{self, KeyRecord};
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, Progress, SnapshotMeta};
use envbuild_cache::{Digest, SnapshotId, Store, diff, layout, restore};
use serde::Serialize;

use crate::cli::{BuildArgs, GlobalArgs, RepoArgs};
use crate::{bridge, format, output, progress, secrets, store, ui};

/// Connects to the Docker engine when first needed.
pub fn lazy_engine() -> LazyEngine {
    LazyEngine::new(|| async {
        let engine = DockerEngine::connect().await?;
        Ok(Arc::new(engine) as Arc<dyn ContainerEngine>)
    })
}

/// Loads the repository's config, printing its diagnostics; fails when it is invalid.
pub fn load_config(repo: &RepoArgs) -> anyhow::Result<envbuild_schema::LoadedConfig> {
    let repo_dir = std::fs::canonicalize(&repo.repo)
        .with_context(|| format!("cannot open the repository `{}`", repo.repo.display()))?;
    let file = repo_dir.join(envbuild_schema::DEFAULT_CONFIG_PATH);
    let loaded = envbuild_schema::load(&file, Some(&repo_dir));
    for diagnostic in &loaded.diagnostics {
        ui::eprint_line(diagnostic);
    }
    if loaded.has_errors() {
        bail!("`{}` is invalid; fix it first (see `envbuild validate`)", file.display());
    }
    Ok(loaded)
}

fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) =
                pair.split_once('=').with_context(|| format!("{what} `{pair}` is not NAME=VALUE"))?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Computes the plan and keys, resolving a base snapshot through the store. Also returns the
/// secret records in scope (not yet decrypted: a hit never needs their values).
pub async fn make_plan(
    repo: &RepoArgs,
    store: &Arc<dyn Store>,
    engine: &mut LazyEngine,
) -> anyhow::Result<(Plan, Vec<secrets::Found>)> {
    let loaded = load_config(repo)?;
    let spec = loaded.valid_spec().context("the config is invalid")?;
    let base_snapshot = match (&spec.build, &spec.snapshot) {
        (None, Some(query)) => Some(
            catalog::resolve(&**store, query)
                .await
                .with_context(|| {
                    format!("the config starts from snapshot `{query}`, which is not in {}", store.location())
                })?
                .to_string(),
        ),
        _ => None,
    };
    let found = secrets::list(&**store, &repo.scopes).await?;
    let options = PlanOptions {
        input_globs: repo.input.clone(),
        env: parse_pairs(&repo.env, "--env")?,
        build_args: parse_pairs(&repo.build_arg, "--build-arg")?,
        secret_versions: secrets::install_versions(&found),
        base_snapshot,
        network: repo.network.into(),
    };
    Ok((pipeline::plan(&loaded, options, engine).await?, found))
}

#[derive(Debug, Default, Serialize)]
struct Timings {
    keys: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_image: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    install: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export_and_store: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_check: Option<f64>,
    total: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    id: SnapshotId,
    hit: bool,
    system_key: String,
    env_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_image_reused: Option<bool>,
    timings: Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    sizes: Option<Sizes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Sizes {
    bytes: u64,
    entries: usize,
    chunks: usize,
    new_chunks: usize,
    new_stored_bytes: u64,
    stored_bytes: u64,
}

/// The snapshot a stored key points at, if it really is stored.
pub async fn stored_snapshot(store: &dyn Store, env_key: &str) -> anyhow::Result<Option<SnapshotId>> {
    let key = Digest::from_str(env_key)?;
    let Some(record) = catalog::read_key(store, &key).await? else { return Ok(None) };
    let present = store.head(&layout::snapshot(&record.snapshot)).await?.is_some();
    Ok(present.then_some(record.snapshot))
}

pub async fn run(global: &GlobalArgs, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let store = store::open(global).await?;
    let mut engine = lazy_engine();
    let (plan, found) = make_plan(&args.repo, &store, &mut engine).await?;
    let mut timings = Timings { keys: started.elapsed().as_secs_f64(), ..Timings::default() };
    if !args.no_cache
        && let Some(id) = stored_snapshot(&*store, &plan.keys.env_key).await?
    {
        timings.total = started.elapsed().as_secs_f64();
        ui::eprint_line(format!(
            "cache hit: env key {} is snapshot {id} ({}, no build)",
            short(&plan.keys.env_key),
            format::duration(started.elapsed())
        ));
        let report = Report {
            id,
            hit: true,
            system_key: plan.keys.system_key.clone(),
            env_key: plan.keys.env_key.clone(),
            system_image: None,
            system_image_reused: None,
            timings,
            sizes: None,
            idempotent: None,
        };
        return finish(args, &report);
    }
    // A miss needs the values: decrypt them all (a KMS outage fails here, naming them), and
    // from now on mask the redacted ones in everything printed.
    let loaded = secrets::open_all(found)
        .await
        .context("nothing was built: install runs with all of its secrets or not at all")?;
    ui::set_redaction(secrets::patterns(&loaded));
    let engine = engine.get().await?;
    let cleanup = Cleanup::new(engine.clone());
    let work = build_miss(global, args, &store, &engine, &plan, &loaded, &cleanup, &mut timings, started);
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cleanup.run().await;
    match outcome {
        Ok(report) => finish(args, &report),
        Err(e) if e.to_string() == "interrupted" => {
            ui::eprint_line("interrupted: the build's containers were removed; nothing was published");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e),
    }
}

fn finish(args: &BuildArgs, report: &Report) -> anyhow::Result<ExitCode> {
    if args.json {
        output::json(report)?;
    } else {
        output::line(report.id);
    }
    if args.strict && report.idempotent == Some(false) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn short(key: &str) -> &str {
    &key[..key.len().min(19)]
}

#[allow(clippy::too_many_arguments)]
async fn build_miss(
    global: &GlobalArgs,
    args: &BuildArgs,
    store: &Arc<dyn Store>,
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    loaded: &[secrets::Loaded],
    cleanup: &Cleanup,
    timings: &mut Timings,
    started: Instant,
) -> anyhow::Result<Report> {
    ui::eprint_line(format!(
        "building: system key {}, env key {} (not in {})",
        short(&plan.keys.system_key),
        short(&plan.keys.env_key),
        store.location()
    ));
    // One sink per step, so what a step printed is out (the redactor holds back a few bytes
    // while a value could still be forming) before the next step's messages.
    let system =
        system_image(global, args, store, engine, plan, cleanup, &mut ui::RedactingSink::new()).await?;
    timings.system_image = Some(system.duration.as_secs_f64());
    ui::eprint_line(if system.reused {
        format!("system image {} reused (its key is unchanged)", short(&system.id))
    } else {
        format!("system image {} built in {}", short(&system.id), format::duration(system.duration))
    });
    ui::eprint_line(format!("running install in {}", pipeline::WORKSPACE));
    // Install sees the secrets declared for it, never in the Docker build (build args and ENV
    // persist in image history).
    let install_secrets = secrets::env_pairs(loaded, When::at_install);
    let run = pipeline::run_install(
        engine,
        plan,
        &system,
        &install_secrets,
        cleanup,
        &mut ui::RedactingSink::new(),
    )
    .await?;
    timings.install = Some(run.duration.as_secs_f64());
    let exported = Instant::now();
    let report =
        export_into_store(global, store, engine, plan, &system.config, &run.container, loaded).await?;
    timings.export_and_store = Some(exported.elapsed().as_secs_f64());
    ui::eprint_line(format!(
        "stored snapshot {}: {} in {} entries; {} new chunks ({}) in {}",
        report.id,
        format::bytes(report.bytes),
        report.entries,
        report.new_chunks,
        format::bytes(report.new_stored_bytes),
        format::duration(exported.elapsed())
    ));
    let record = KeyRecord {
        format: catalog::KEY_FORMAT.to_owned(),
        key: Digest::from_str(&plan.keys.env_key)?,
        snapshot: report.id,
        created: catalog::now_rfc3339(),
        builder: format!("envbuild {}", env!("CARGO_PKG_VERSION")),
        info: serde_json::json!({
            "system_key": plan.keys.system_key,
            "system_image": system.id,
            "timings": { "system_image": timings.system_image, "install": timings.install, "export_and_store": timings.export_and_store },
        }),
    };
    catalog::write_key(&**store, &record, args.no_cache).await?;
    let mut idempotent = None;
    if args.check_idempotent {
        let checked = Instant::now();
        let same = check_idempotent(engine, &run, store, &report.id, &mut ui::RedactingSink::new()).await?;
        timings.idempotency_check = Some(checked.elapsed().as_secs_f64());
        idempotent = Some(same);
    }
    timings.total = started.elapsed().as_secs_f64();
    Ok(Report {
        id: report.id,
        hit: false,
        system_key: plan.keys.system_key.clone(),
        env_key: plan.keys.env_key.clone(),
        system_image: Some(system.id),
        system_image_reused: Some(system.reused),
        timings: std::mem::take(timings),
        sizes: Some(Sizes {
            bytes: report.bytes,
            entries: report.entries,
            chunks: report.chunks,
            new_chunks: report.new_chunks,
            new_stored_bytes: report.new_stored_bytes,
            stored_bytes: report.stored_bytes,
        }),
        idempotent,
    })
}

#[allow(clippy::too_many_arguments)]
async fn system_image(
    global: &GlobalArgs,
    args: &BuildArgs,
    store: &Arc<dyn Store>,
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    cleanup: &Cleanup,
    sink: &mut ui::RedactingSink,
) -> anyhow::Result<SystemImage> {
    match &plan.source {
        SystemSource::Dockerfile { .. } => {
            Ok(pipeline::ensure_system_image(engine, plan, args.no_cache, cleanup, sink).await?)
        }
        SystemSource::Snapshot { id } => {
            let id = SnapshotId::from_str(id)?;
            let manifest = restore::read_manifest(&**store, &id).await?;
            let config = manifest.image_config.as_ref().map(oci::from_json).unwrap_or_default();
            let jobs = crate::jobs(global);
            let store = store.clone();
            Ok(pipeline::import_snapshot_image(engine, &id.to_string(), &config, move || {
                bridge::snapshot_stream(store, &manifest, jobs)
            })
            .await?)
        }
    }
}

async fn export_into_store(
    global: &GlobalArgs,
    store: &Arc<dyn Store>,
    engine: &Arc<dyn ContainerEngine>,
    plan: &Plan,
    config: &ImageConfig,
    container: &str,
    loaded: &[secrets::Loaded],
) -> anyhow::Result<IngestReport> {
    let rootfs = engine.export(container).await?;
    let reader = bridge::stream_reader(rootfs);
    let meta = SnapshotMeta {
        image_config: Some(oci::to_json(config)),
        environment: serde_json::from_slice(&plan.spec.canonical_json()).ok(),
        keys: serde_json::to_value(&plan.keys).ok(),
    };
    let patterns = secrets::patterns(loaded);
    let leak_scanner = (!patterns.is_empty())
        .then(|| Arc::new(secrets::SecretScanner(patterns)) as Arc<dyn envbuild_cache::ingest::LeakScanner>);
    let options =
        IngestOptions { concurrency: crate::jobs(global), meta, leak_scanner, ..IngestOptions::default() };
    let counters = Arc::new(Progress::default());
    let bar = progress::Bar::start(&counters, "storing");
    let report = ingest::ingest(store.clone(), Box::new(reader), options, counters)
        .await
        .with_context(|| format!("cannot store the environment in {}", store.location()))?;
    drop(bar);
    Ok(report)
}

/// Runs install a second time on the result and reports what changed.
async fn check_idempotent(
    engine: &Arc<dyn ContainerEngine>,
    run: &pipeline::InstallRun,
    store: &Arc<dyn Store>,
    id: &SnapshotId,
    sink: &mut ui::RedactingSink,
) -> anyhow::Result<bool> {
    ui::eprint_line("checking idempotency: running install a second time");
    let (code, tail) = pipeline::rerun_install(engine, run, sink).await?;
    if code != 0 {
        ui::eprint_line(format!(
            "warning: install is not idempotent: its second run failed with exit code {code}\n{tail}"
        ));
        return Ok(false);
    }
    let rootfs = engine.export(&run.container).await?;
    let mut reader = bridge::stream_reader(rootfs);
    let toc = tokio::task::spawn_blocking(move || ingest::table_of_contents(&mut reader)).await??;
    let stored = restore::read_manifest(&**store, id).await?;
    let changes = diff::diff_entries(&stored.toc, &toc, false);
    if changes.is_empty() {
        ui::eprint_line("install is idempotent: a second run changed no file");
        return Ok(true);
    }
    let mut lines = vec![format!(
        "warning: install is not idempotent: a second run added {}, removed {} and changed {} files",
        changes.added.len(),
        changes.removed.len(),
        changes.changed.len()
    )];
    lines.extend(changes.added.iter().take(20).map(|e| format!("  + {}", e.path)));
    lines.extend(changes.removed.iter().take(20).map(|e| format!("  - {}", e.path)));
    lines.extend(
        changes.changed.iter().take(20).map(|c| format!("  ~ {} ({})", c.path, c.aspects.join(", "))),
    );
    ui::eprint_line(lines.join("\n"));
    Ok(false)
}

impl From<crate::cli::NetworkArg> for envbuild_builder::engine::Network {
    fn from(value: crate::cli::NetworkArg) -> Self {
        match value {
            crate::cli::NetworkArg::Host => Self::Host,
            crate::cli::NetworkArg::None => Self::None,
        }
    }
}
