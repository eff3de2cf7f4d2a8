//! The build workflow: a repository's environment.json into a snapshot, or the one already
//! built (DESIGN §1).
//!
//! 1. validate the config and compute both keys (no engine unless a base is named by tag);
//! 2. a stored env key is a hit: the snapshot id, and nothing else is touched;
//! 3. otherwise build the system image (or reuse it when only the env key changed), run install
//!    with the repository at `/workspace`, export the container straight into the store
//!    (no temporary file), and record the key.
//!
//! Containers and failed builds' layers are removed on every path: success, failure, and
//! cancellation through [`Session::cancel`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envbuild_builder::cleanup::Cleanup;
use envbuild_builder::engine::{ContainerEngine, ImageConfig, Network};
use envbuild_builder::inputs::InputRule;
use envbuild_builder::keys::{self, Difference, KeyManifest};
use envbuild_builder::oci;
use envbuild_builder::pipeline::{self, InstallSetup, SystemImage};
use envbuild_builder::plan::{self, Plan, PlanOptions, SystemSource};
use envbuild_cache::catalog::{self, KeyRecord};
use envbuild_cache::diff::Diff;
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, LeakScanner, Progress, SnapshotMeta};
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{Digest, SnapshotId, Store, diff, layout, restore};
use envbuild_schema::Base;
use envbuild_secrets::scan::SecretScanner;
use envbuild_secrets::{Loaded, SecretString, When, records, redact};
use serde::Serialize;

use crate::error::{Error, Result, ResultExt};
use crate::session::Session;
use crate::{bridge, config};

/// Where the repository is and what feeds its keys.
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// The repository (the folder holding `.cursor/environment.json`).
    pub repo: PathBuf,
    /// Narrow the install inputs to paths matching these globs.
    pub inputs: Vec<String>,
    /// Environment variables install sees (part of the env key).
    pub env: BTreeMap<String, String>,
    /// The Dockerfile's build args (part of the system key).
    pub build_args: BTreeMap<String, String>,
    /// Network of the build and install.
    pub network: Network,
    /// Environment groups the repository is in, beside the one `.cursor/envbuild.json`
    /// declares: it sees their secrets.
    pub groups: Vec<String>,
    /// The default base image, for a config that names none (`--base-image`).
    pub base_image: String,
    /// A `snapshot` base that cannot be used is an error instead of a fallback.
    pub strict: bool,
}

impl Default for RepoOptions {
    fn default() -> Self {
        Self {
            repo: PathBuf::from("."),
            inputs: Vec::new(),
            env: BTreeMap::new(),
            build_args: BTreeMap::new(),
            network: Network::Host,
            groups: Vec::new(),
            base_image: std::env::var(crate::env::BASE_IMAGE)
                .ok()
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| envbuild_builder::plan::DEFAULT_BASE_IMAGE.to_owned()),
            strict: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub repo: RepoOptions,
    /// Build even if the key is stored (the key record then points at the new snapshot).
    pub no_cache: bool,
    /// Run install a second time on the result and report what it changed.
    pub check_idempotent: bool,
    /// Install from the system image alone, not from the last checkpoint.
    pub clean: bool,
    /// Build the Dockerfile without Docker's layer cache (`--no-cache` keeps it).
    pub no_layer_cache: bool,
    /// Give install no package-manager cache volume.
    pub no_package_cache: bool,
}

/// How long each step took, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub keys: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_image: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_and_store: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_check: Option<f64>,
    pub total: f64,
}

/// What a build stored.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub bytes: u64,
    pub entries: usize,
    pub chunks: usize,
    pub new_chunks: usize,
    pub new_stored_bytes: u64,
    pub stored_bytes: u64,
}

/// What the second install run of `--check-idempotent` changed.
#[derive(Debug, Clone, Serialize)]
pub struct Idempotency {
    pub idempotent: bool,
    /// The second run's exit code, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_with: Option<i64>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub id: SnapshotId,
    pub hit: bool,
    pub system_key: Digest,
    pub env_key: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_image_reused: Option<bool>,
    pub timings: Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Sizes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

/// A plan with the secret records in scope (not yet decrypted: a hit never needs values).
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: Plan,
    pub secrets: Vec<records::Found>,
}

/// Computes the plan and keys of a repository, resolving a base snapshot through the store.
pub async fn plan(session: &Session, repo: &RepoOptions) -> Result<Planned> {
    let loaded = config::load(session, &repo.repo)?;
    let spec = loaded.valid_spec().ok_or_else(|| Error::InvalidConfig { file: loaded.file.clone() })?;
    let base_snapshot = match spec.base() {
        Base::Snapshot(query) => usable_snapshot(session, query, spec, repo.strict).await?,
        _ => None,
    };
    let settings = config::settings(&loaded.file)?.unwrap_or_default();
    let repository = loaded
        .paths
        .as_ref()
        .map(|p| envbuild_builder::inputs::repository_id(&p.repo_root))
        .unwrap_or_default();
    let scopes = crate::secrets::scopes_of(&repository, settings.environment.as_deref(), &repo.groups)?;
    let secrets = records::list(&*session.store, &scopes).await?;
    let inputs = if !repo.inputs.is_empty() {
        InputRule::Flags(repo.inputs.clone())
    } else if let Some(globs) = settings.inputs {
        InputRule::Settings(globs)
    } else {
        InputRule::Default
    };
    let options = PlanOptions {
        inputs,
        env: repo.env.clone(),
        build_args: repo.build_args.clone(),
        install_secrets: records::install_secrets(&secrets),
        available_secrets: secrets.iter().map(|f| (f.name.clone(), f.scope.to_string())).collect(),
        base_snapshot,
        default_image: repo.base_image.clone(),
        network: repo.network,
    };
    let plan = plan::plan(&loaded, options, &session.engine).await?;
    Ok(Planned { plan, secrets })
}

/// The snapshot the config's `snapshot` names, when it can be used: stored, with a manifest
/// that reads back. When it cannot (gone, damaged, no access — or a Cursor snapshot id, which
/// no envbuild store holds), Cursor falls back to `image`, `build` or its default base and
/// still runs install; envbuild does the same with a warning, or fails with `strict`.
async fn usable_snapshot(
    session: &Session,
    query: &str,
    spec: &envbuild_schema::EnvironmentSpec,
    strict: bool,
) -> Result<Option<Digest>> {
    let found = async {
        let id = catalog::resolve(&*session.store, query).await?;
        restore::read_manifest(&*session.store, &id).await?;
        Ok::<_, Error>(id)
    }
    .await;
    match found {
        Ok(id) => Ok(Some(id.0)),
        Err(e) if strict => Err(e.context(format!(
            "the config starts from snapshot `{query}`, which cannot be used (--strict forbids the fallback)"
        ))),
        Err(e) => {
            session.warn(format!(
                "the snapshot `{query}` cannot be used ({}); starting from {} instead, as Cursor does, and install runs as usual\nhint: build it with `envbuild build` and name its id or a ref in `snapshot`, or pass --strict to make this an error",
                envbuild_builder::error::chain(&e),
                spec.fallback_base().describe()
            ));
            Ok(None)
        }
    }
}

/// The snapshot a stored key points at, if it really is stored.
pub async fn stored_snapshot(store: &dyn Store, env_key: &Digest) -> Result<Option<SnapshotId>> {
    let Some(record) = catalog::read_key(store, env_key).await? else { return Ok(None) };
    let present = store.head(&layout::snapshot(&record.snapshot)).await?.is_some();
    Ok(present.then_some(record.snapshot))
}

/// Opens the secrets `found` and registers their values for redaction everywhere; fails
/// naming every secret that cannot be opened.
pub async fn open_secrets(session: &Session, found: Vec<records::Found>) -> Result<Vec<Loaded>> {
    let loaded = records::open_all(&session.keyring, found).await?;
    redact::register(&records::patterns(&loaded)?)?;
    Ok(loaded)
}

fn short(key: &impl std::fmt::Display) -> String {
    key.to_string().chars().take(19).collect()
}

/// Builds the repository's environment, or finds it built.
pub async fn build(session: &Session, options: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let Planned { plan, secrets } = plan(session, &options.repo).await?;
    let mut timings = Timings { keys: started.elapsed().as_secs_f64(), ..Timings::default() };
    if !options.no_cache
        && let Some(id) = stored_snapshot(&*session.store, &plan.keys.env_key).await?
    {
        timings.total = started.elapsed().as_secs_f64();
        session.note(format!(
            "cache hit: env key {} is snapshot {id} ({}, no build)",
            short(&plan.keys.env_key),
            crate::format::duration(started.elapsed())
        ));
        let idempotency = if options.check_idempotent {
            let checked = Instant::now();
            let result = check_stored(session, &plan, &id, secrets).await?;
            timings.idempotency_check = Some(checked.elapsed().as_secs_f64());
            timings.total = started.elapsed().as_secs_f64();
            Some(result)
        } else {
            None
        };
        return Ok(BuildReport {
            id,
            hit: true,
            system_key: plan.keys.system_key,
            env_key: plan.keys.env_key,
            system_image: None,
            system_image_reused: None,
            timings,
            sizes: None,
            idempotency,
        });
    }
    // A miss needs the values: decrypt them all (a KMS outage fails here, naming them), and
    // from now on mask the redacted ones in everything reported.
    let loaded = open_secrets(session, secrets)
        .await
        .context("nothing was built: install runs with all of its secrets or not at all")?;
    refuse_secret_values(&plan, &loaded)?;
    let engine = session.engine.get().await?;
    let cleanup = Cleanup::new(engine.clone());
    let miss = Miss { session, options, plan: &plan, engine: &engine, secrets: &loaded, cleanup: &cleanup };
    let outcome = tokio::select! {
        outcome = miss.run(&mut timings, started) => outcome,
        () = session.cancel.cancelled() => Err(Error::Interrupted),
    };
    cleanup.run().await;
    outcome.map_err(Error::masked)
}

/// Refuses a build arg or an environment value that is a stored secret's value: build args
/// are written into the image's history and the environment into the container's
/// configuration, where a secret must never be. The error names the variable and the secret,
/// never the value.
fn refuse_secret_values(plan: &Plan, loaded: &[Loaded]) -> Result<()> {
    let given = plan
        .build_args
        .iter()
        .map(|(k, v)| ("--build-arg", k, v))
        .chain(plan.env.iter().map(|(k, v)| ("--env", k, v)));
    for (flag, name, value) in given {
        if let Some(secret) = loaded.iter().find(|s| !value.is_empty() && s.value.expose() == value) {
            return Err(Error::Failed(format!(
                "`{flag} {name}` carries the value of the secret `{}` ({}); nothing was built\nhint: {}",
                secret.name,
                secret.scope,
                if flag == "--build-arg" {
                    "build args are kept in the image's history: read the secret in the Dockerfile with `RUN --mount=type=secret,id=NAME` (set it with `envbuild secrets set NAME --when install`)"
                } else {
                    "install sees the secrets in its scope as environment variables already: drop the `--env` and reference the variable"
                }
            )));
        }
    }
    Ok(())
}

/// Checkpoint images deeper than this are not built on: each incremental build adds a layer,
/// and overlay file systems slow down (and Docker stops at 125) as the chain grows. The
/// snapshot imported as one layer starts a new chain.
const MAX_CHECKPOINT_LAYERS: usize = 48;

/// Where the tracked list of a snapshot's `/workspace` is.
const TRACKED: &str = envbuild_builder::workspace::TRACKED;

/// The checkpoint an incremental install starts from.
#[derive(Debug, Clone)]
struct Parent {
    id: SnapshotId,
    manifest: Arc<Manifest>,
    image: SystemImage,
    /// The files its `/workspace` tracked, one per line.
    tracked: String,
    how: &'static str,
    /// The secrets its stream was scanned for (see `records::scanned`), when its key record
    /// says.
    scanned: Option<Vec<String>>,
}

/// The files under `/workspace` of a snapshot, by path under it, as the upload compares them.
fn workspace_files(manifest: &Manifest) -> BTreeMap<String, envbuild_builder::workspace::ParentEntry> {
    use envbuild_builder::workspace::{ParentEntry, ParentKind};
    use envbuild_cache::tar::EntryKind;
    manifest
        .toc
        .iter()
        .filter(|e| e.path_b64.is_none())
        .filter_map(|e| {
            let path = e.path.strip_prefix("workspace/")?;
            let kind = match e.kind {
                EntryKind::File => e
                    .hash
                    .as_deref()
                    .and_then(|h| h.strip_prefix("xxh3:"))
                    .and_then(|h| u128::from_str_radix(h, 16).ok())
                    .map_or(ParentKind::Other, |xxh3| ParentKind::File { size: e.size, xxh3 }),
                EntryKind::Symlink if e.link_b64.is_none() => {
                    ParentKind::Symlink { target: e.link.clone().unwrap_or_default() }
                }
                EntryKind::Directory => ParentKind::Directory,
                _ => ParentKind::Other,
            };
            Some((
                path.to_owned(),
                ParentEntry { kind, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime },
            ))
        })
        .collect()
}

/// The package-manager cache volume of a repository on this host.
pub fn cache_volume(repository: &str) -> String {
    format!("envbuild-cache-{}", &Digest::of(repository.as_bytes()).hex()[..16])
}

/// One build of a key that is not stored.
struct Miss<'a> {
    session: &'a Session,
    options: &'a BuildOptions,
    plan: &'a Plan,
    engine: &'a Arc<dyn ContainerEngine>,
    secrets: &'a [Loaded],
    cleanup: &'a Cleanup,
}

impl Miss<'_> {
    async fn run(&self, timings: &mut Timings, started: Instant) -> Result<BuildReport> {
        let (session, plan) = (self.session, self.plan);
        session.note(format!(
            "building: system key {}, env key {} (not in {})",
            short(&plan.keys.system_key),
            short(&plan.keys.env_key),
            session.store.location()
        ));
        let system = self.system_image().await?;
        timings.system_image = Some(system.duration.as_secs_f64());
        session.note(if system.reused {
            format!("system image {} reused (its key is unchanged)", short(&system.id))
        } else {
            format!(
                "system image {} built in {}",
                short(&system.id),
                crate::format::duration(system.duration)
            )
        });
        // Install starts from the last checkpoint of this repository on this system image
        // (its parent), so a changed dependency costs what changed, not a reinstall.
        let parent = if self.options.clean { None } else { self.parent(&system).await };
        let (image, remove, checkpoint) = match &parent {
            Some(parent) => {
                session.note(format!(
                    "running install in {}, incremental from snapshot {} ({})",
                    pipeline::WORKSPACE,
                    short(&parent.id),
                    parent.how
                ));
                (
                    parent.image.clone(),
                    envbuild_builder::workspace::removed(&parent.tracked, &plan.workspace),
                    Some(Arc::new(envbuild_builder::workspace::Checkpoint {
                        files: workspace_files(&parent.manifest),
                        tracked: parent.tracked.clone(),
                    })),
                )
            }
            None => {
                session.note(format!("running install in {} on the system image", pipeline::WORKSPACE));
                (system.clone(), Vec::new(), None)
            }
        };
        // Install sees the secrets declared for it, through a file on a tmpfs: never the
        // container's configuration, and never the Docker build (build args and ENV persist in
        // image history).
        let cache_volume = if self.options.no_package_cache {
            None
        } else {
            let name = cache_volume(&plan.repository);
            crate::caches::prepare(session, &name, &plan.repository).await?;
            Some(name)
        };
        let setup = InstallSetup {
            secrets: records::env_pairs(self.secrets, When::at_install),
            remove,
            cache_volume,
            checkpoint,
        };
        let run = pipeline::run_install(
            self.engine,
            plan,
            &image,
            &setup,
            self.cleanup,
            &mut session.output_sink(),
        )
        .await?;
        timings.install = Some(run.duration.as_secs_f64());
        let exported = Instant::now();
        let (report, how) = self.export_into_store(&system.config, &run.container, parent.as_ref()).await?;
        timings.export_and_store = Some(exported.elapsed().as_secs_f64());
        session.note(format!(
            "stored snapshot {}: {} in {} entries; {} new chunks ({}) in {}{how}",
            report.id,
            crate::format::bytes(report.bytes),
            report.entries,
            report.new_chunks,
            crate::format::bytes(report.new_stored_bytes),
            crate::format::duration(exported.elapsed())
        ));
        self.check_chrome(&report.id).await?;
        self.checkpoint(&run, &report.id, &system, parent.as_ref()).await;
        let record = KeyRecord {
            format: catalog::KEY_FORMAT.to_owned(),
            key: plan.keys.env_key,
            snapshot: report.id,
            created: catalog::now_rfc3339(),
            builder: format!("envbuild {}", env!("CARGO_PKG_VERSION")),
            info: serde_json::json!({
                "system_key": plan.keys.system_key,
                "system_image": system.id,
                "repository": plan.repository,
                "parent": parent.as_ref().map(|p| p.id.to_string()),
                "scanned_secrets": records::scanned(self.secrets),
                "timings": {
                    "system_image": timings.system_image,
                    "install": timings.install,
                    "export_and_store": timings.export_and_store,
                },
            }),
        };
        catalog::write_key(&*session.store, &record, self.options.no_cache).await?;
        let head = catalog::HeadRecord {
            format: catalog::HEAD_FORMAT.to_owned(),
            repository: plan.repository.clone(),
            system_key: plan.keys.system_key,
            snapshot: report.id,
            env_key: plan.keys.env_key,
            updated: catalog::now_rfc3339(),
        };
        catalog::write_head(&*session.store, &head).await?;
        let mut idempotency = None;
        if self.options.check_idempotent {
            let checked = Instant::now();
            idempotency = Some(self.check_idempotent(&run, &report.id).await?);
            timings.idempotency_check = Some(checked.elapsed().as_secs_f64());
        }
        timings.total = started.elapsed().as_secs_f64();
        Ok(BuildReport {
            id: report.id,
            hit: false,
            system_key: plan.keys.system_key,
            env_key: plan.keys.env_key,
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
            idempotency,
        })
    }

    /// The checkpoint install starts from: the newest snapshot of this repository on this
    /// system key (its head), as the image committed when it was built or, when this host does
    /// not have that, imported from the store. Anything wrong with it (gone, damaged, a layer
    /// chain grown too deep) means a clean build, with a warning when something was wrong.
    async fn parent(&self, system: &SystemImage) -> Option<Parent> {
        let (session, plan) = (self.session, self.plan);
        let head = match catalog::read_head(&*session.store, &plan.repository, &plan.keys.system_key).await {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(e) => {
                session.warn(format!(
                    "the last build of this repository cannot be read ({}); building clean",
                    envbuild_builder::error::chain(&e)
                ));
                return None;
            }
        };
        match self.open_parent(&head, system).await {
            Ok(parent) => Some(parent),
            Err(e) => {
                session.warn(format!(
                    "the last build of this repository, snapshot {}, cannot be used ({}); building clean",
                    head.snapshot,
                    envbuild_builder::error::chain(&e)
                ));
                None
            }
        }
    }

    async fn open_parent(&self, head: &catalog::HeadRecord, system: &SystemImage) -> Result<Parent> {
        let session = self.session;
        let manifest = restore::read_manifest(&*session.store, &head.snapshot).await?;
        let tracked =
            restore::read_file(&*session.store, &manifest, TRACKED.trim_start_matches('/'), 64 << 20)
                .await?
                .ok_or_else(|| Error::Failed(format!("it records no list of tracked files ({TRACKED})")))?;
        let tracked =
            String::from_utf8(tracked).map_err(|_| Error::Failed(format!("its {TRACKED} is not UTF-8")))?;
        let checkpoint = self.engine.image(&pipeline::checkpoint_tag(&head.snapshot.0)).await?;
        let (image, how) = match checkpoint {
            Some(image)
                if image.labels.get(pipeline::CHECKPOINT_LABEL) == Some(&head.snapshot.to_string())
                    && image.layers <= MAX_CHECKPOINT_LAYERS =>
            {
                let image = SystemImage {
                    id: image.id,
                    config: system.config.clone(),
                    reused: true,
                    duration: Duration::ZERO,
                };
                (image, "its checkpoint image on this host")
            }
            _ => {
                let (store, jobs, stream_manifest) = (session.store.clone(), session.jobs, manifest.clone());
                let mut image = pipeline::import_snapshot_image(
                    self.engine,
                    &head.snapshot.0,
                    &system.config,
                    move || bridge::snapshot_stream(store, &stream_manifest, jobs),
                )
                .await?;
                image.config.clone_from(&system.config);
                (image, "imported from the store")
            }
        };
        // What the parent's stream was scanned for: a splice onto it scans only the new bytes.
        let scanned = catalog::read_key(&*session.store, &head.env_key)
            .await
            .ok()
            .flatten()
            .filter(|record| record.snapshot == head.snapshot)
            .and_then(|record| serde_json::from_value(record.info.get("scanned_secrets")?.clone()).ok());
        Ok(Parent { id: head.snapshot, manifest: Arc::new(manifest), image, tracked, how, scanned })
    }

    /// Commits the install container as the checkpoint of `id` (the next build starts from
    /// it), and removes the previous checkpoint of the lineage. A failure costs the next build
    /// an import, so it is only a warning.
    async fn checkpoint(
        &self,
        run: &pipeline::InstallRun,
        id: &SnapshotId,
        system: &SystemImage,
        parent: Option<&Parent>,
    ) {
        if let Err(e) = pipeline::commit_checkpoint(self.engine, run, &id.0, &system.config).await {
            self.session
                .warn(format!("cannot keep the checkpoint of {id}: {}", envbuild_builder::error::chain(&e)));
            return;
        }
        if let Some(parent) = parent.filter(|p| p.id != *id) {
            let _ = self.engine.remove_image(&pipeline::checkpoint_tag(&parent.id.0)).await;
        }
    }

    async fn system_image(&self) -> Result<SystemImage> {
        let session = self.session;
        match &self.plan.source {
            SystemSource::Dockerfile { dockerfile_text, .. } => Ok(pipeline::ensure_system_image(
                self.engine,
                self.plan,
                self.options.no_layer_cache,
                &build_secrets(session, dockerfile_text, self.secrets),
                self.cleanup,
                &mut session.output_sink(),
            )
            .await?),
            SystemSource::Image { .. } => Ok(pipeline::ensure_system_image(
                self.engine,
                self.plan,
                self.options.no_layer_cache,
                &BTreeMap::new(),
                self.cleanup,
                &mut session.output_sink(),
            )
            .await?),
            SystemSource::Snapshot { id } => {
                let id = SnapshotId(*id);
                let manifest = restore::read_manifest(&*session.store, &id).await?;
                let config = image_config(&manifest)?;
                let (store, jobs) = (session.store.clone(), session.jobs);
                Ok(pipeline::import_snapshot_image(self.engine, &id.0, &config, move || {
                    bridge::snapshot_stream(store, &manifest, jobs)
                })
                .await?)
            }
        }
    }

    /// Stores the install container's file system: spliced onto the parent's snapshot when
    /// install started from it (reading only what changed, see `delta`), else exported whole.
    /// Returns the report and how it was stored, for the note.
    async fn export_into_store(
        &self,
        config: &ImageConfig,
        container: &str,
        parent: Option<&Parent>,
    ) -> Result<(IngestReport, String)> {
        let session = self.session;
        let options = self.ingest_options(config)?;
        let how = std::env::var(crate::env::EXPORT).unwrap_or_default();
        let always = match how.as_str() {
            "" | "auto" => false,
            "changes" => true,
            "whole" => return self.export_whole(container, options).await.map(|r| (r, String::new())),
            other => {
                return Err(Error::Failed(format!(
                    "{}=`{other}` is not a way to store a build\nhint: use `auto`, `changes` or `whole`",
                    crate::env::EXPORT
                )));
            }
        };
        if let Some(parent) = parent {
            match self.splice_into_store(container, parent, options.clone(), always).await {
                Ok((report, reads)) => {
                    return Ok((
                        report,
                        format!(" (the parent's, plus {reads} changed paths read from the engine)"),
                    ));
                }
                // A leak is a refusal, not a failure: a full export would find it again.
                Err(e @ Error::Cache(envbuild_cache::Error::Leak { .. })) => return Err(e),
                Err(e) => {
                    session.note(format!(
                        "storing the whole file system: {}",
                        envbuild_builder::error::chain(&e)
                    ));
                }
            }
        }
        Ok((self.export_whole(container, options).await?, String::new()))
    }

    /// The container's whole file system, exported and ingested.
    async fn export_whole(&self, container: &str, options: IngestOptions) -> Result<IngestReport> {
        let session = self.session;
        let rootfs = self.engine.export(container).await?;
        let reader = bridge::stream_reader(rootfs);
        let counters = Arc::new(Progress::default());
        let _bar = session.reporter.progress("storing", &counters);
        ingest::ingest(session.store.clone(), Box::new(reader), options, counters)
            .await
            .with_context(|| format!("cannot store the environment in {}", session.store.location()))
    }

    /// The new snapshot as the parent's plus the paths install changed; how many were read.
    async fn splice_into_store(
        &self,
        container: &str,
        parent: &Parent,
        options: IngestOptions,
        always: bool,
    ) -> Result<(IngestReport, usize)> {
        let session = self.session;
        let scanned = records::scanned(self.secrets);
        let covered = parent.scanned.as_ref().is_some_and(|p| scanned.iter().all(|s| p.contains(s)));
        if !covered {
            return Err(Error::Failed("the parent was not scanned for every secret in scope".into()));
        }
        let asked = Instant::now();
        let Some(changes) = self.engine.changes(container).await? else {
            return Err(Error::Failed("the engine does not report changed paths".into()));
        };
        let mounts = [envbuild_builder::workspace::CACHE_DIR, envbuild_builder::workspace::SECRETS_DIR];
        let plan = crate::delta::plan(&changes, &parent.manifest, &mounts, always)
            .map_err(|e| Error::Failed(e.0))?;
        let reads = plan.parts.len();
        tracing::debug!(
            "splicing onto {}: {} changes (listed in {:?}), {reads} reads: {:?}",
            parent.id,
            changes.len(),
            asked.elapsed(),
            plan.parts
        );
        let parts = crate::delta::parts(plan, self.engine, container);
        let counters = Arc::new(Progress::default());
        let _bar = session.reporter.progress("storing", &counters);
        let report = envbuild_cache::splice::ingest_onto(
            session.store.clone(),
            parent.manifest.clone(),
            parts,
            options,
            counters,
        )
        .await?;
        Ok((report, reads))
    }

    fn ingest_options(&self, config: &ImageConfig) -> Result<IngestOptions> {
        let environment = serde_json::to_value(self.plan.spec.normalized())
            .map_err(|e| Error::Failed(format!("the normalized config cannot be encoded: {e}")))?;
        let keys = serde_json::to_value(&self.plan.keys)
            .map_err(|e| Error::Failed(format!("the key manifest cannot be encoded: {e}")))?;
        let meta = SnapshotMeta {
            image_config: Some(oci::to_json(config)?),
            environment: Some(environment),
            keys: Some(keys),
        };
        let leak_scanner = SecretScanner::new(&records::patterns(self.secrets)?)?
            .map(|scanner| Arc::new(scanner) as Arc<dyn LeakScanner>);
        Ok(IngestOptions {
            concurrency: self.session.jobs,
            meta,
            leak_scanner,
            verified: crate::store::verified(&*self.session.store),
            ..IngestOptions::default()
        })
    }

    /// Warns when browser testing is on and `chromeExecutablePath` is not in the environment:
    /// the agent's browser tests would fail at their first step.
    async fn check_chrome(&self, id: &SnapshotId) -> Result<()> {
        let spec = &self.plan.spec;
        let Some(chrome) = spec.chrome_executable_path.as_deref().filter(|_| spec.testing_enabled()) else {
            return Ok(());
        };
        let manifest = restore::read_manifest(&*self.session.store, id).await?;
        let wanted = chrome.trim_start_matches('/');
        if !manifest.toc.iter().any(|e| e.path.trim_end_matches('/') == wanted) {
            self.session.warn(format!(
                "browser testing is on (`enable_testing`), and `chromeExecutablePath` `{chrome}` is not in the environment\nhint: install Chromium in the Dockerfile or in `install`, correct the path, or set `\"enable_testing\": false`"
            ));
        }
        Ok(())
    }

    /// Runs install a second time on the result and reports what changed.
    async fn check_idempotent(&self, run: &pipeline::InstallRun, id: &SnapshotId) -> Result<Idempotency> {
        let session = self.session;
        session.note("checking idempotency: running install a second time");
        let (code, tail) = pipeline::rerun_install(self.engine, run, &mut session.output_sink()).await?;
        if code != 0 {
            session.warn(format!(
                "install is not idempotent: its second run failed with exit code {code}\n{}",
                redact::mask(&tail)
            ));
            return Ok(Idempotency {
                idempotent: false,
                failed_with: Some(code),
                added: Vec::new(),
                removed: Vec::new(),
                changed: Vec::new(),
            });
        }
        compare_with_stored(session, self.engine, &run.container, id, "a second run").await
    }
}

/// Paths a second install may change without being non-idempotent: temporary files, logs, and
/// the caches package managers keep beside what they install.
const IDEMPOTENCY_IGNORED: &[&str] = &[
    "tmp/**",
    "var/tmp/**",
    "var/log/**",
    "run/**",
    ".envbuild/**",
    "var/cache/envbuild/**",
    "**/.npm/_logs/**",
    "**/.npm/_cacache/**",
    "**/.npm/_update-notifier-last-checked",
    "**/.cache/**",
    "**/__pycache__/**",
    "**/.pnpm-store/**",
    "**/.yarn/cache/**",
];

/// Runs `container`'s file system against the stored snapshot `id` and reports what `what`
/// (the second install) changed, the ignored paths aside.
async fn compare_with_stored(
    session: &Session,
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    id: &SnapshotId,
    what: &str,
) -> Result<Idempotency> {
    let rootfs = engine.export(container).await?;
    let mut reader = bridge::stream_reader(rootfs);
    let toc = tokio::task::spawn_blocking(move || ingest::table_of_contents(&mut reader))
        .await
        .map_err(|e| Error::Failed(format!("reading the second install's files stopped: {e}")))??;
    let stored = restore::read_manifest(&*session.store, id).await?;
    let changes: Diff = diff::diff_entries(&stored.toc, &toc, false);
    let ignored = envbuild_builder::inputs::Globs::new(
        &IDEMPOTENCY_IGNORED.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>(),
    )?;
    let kept = |path: &str| !ignored.matches(path.trim_end_matches('/'));
    let idempotency = Idempotency {
        idempotent: false,
        failed_with: None,
        added: changes.added.iter().map(|e| e.path.clone()).filter(|p| kept(p)).collect(),
        removed: changes.removed.iter().map(|e| e.path.clone()).filter(|p| kept(p)).collect(),
        changed: changes
            .changed
            .iter()
            .filter(|c| kept(&c.path))
            .map(|c| format!("{} ({})", c.path, c.aspects.join(", ")))
            .collect(),
    };
    let idempotency = Idempotency {
        idempotent: idempotency.added.is_empty()
            && idempotency.removed.is_empty()
            && idempotency.changed.is_empty(),
        ..idempotency
    };
    if idempotency.idempotent {
        session.note(format!(
            "install is idempotent: {what} changed no file (temporary files, logs and package caches aside)"
        ));
    } else {
        let mut lines = vec![format!(
            "install is not idempotent: {what} added {}, removed {} and changed {} files",
            idempotency.added.len(),
            idempotency.removed.len(),
            idempotency.changed.len()
        )];
        for (sign, paths) in
            [("+", &idempotency.added), ("-", &idempotency.removed), ("~", &idempotency.changed)]
        {
            lines.extend(paths.iter().take(SHOWN).map(|p| format!("  {sign} {p}")));
            if paths.len() > SHOWN {
                lines
                    .push(format!("  {sign} ... and {} more (`--json` lists them all)", paths.len() - SHOWN));
            }
        }
        session.warn(lines.join("\n"));
    }
    Ok(idempotency)
}

/// Paths of each kind shown in a report; `--json` has them all.
const SHOWN: usize = 10;

/// `--check-idempotent` on a hit: install runs once more on the stored snapshot (from its
/// checkpoint image, or imported), with `/workspace` brought to the current commit, and what it
/// changes is reported.
async fn check_stored(
    session: &Session,
    plan: &Plan,
    id: &SnapshotId,
    secrets: Vec<records::Found>,
) -> Result<Idempotency> {
    let loaded = open_secrets(session, secrets).await?;
    let engine = session.engine.get().await?;
    let cleanup = Cleanup::new(engine.clone());
    let work = async {
        let manifest = restore::read_manifest(&*session.store, id).await?;
        let config = image_config(&manifest)?;
        let image = match engine.image(&pipeline::checkpoint_tag(&id.0)).await? {
            Some(image) => {
                SystemImage { id: image.id, config: config.clone(), reused: true, duration: Duration::ZERO }
            }
            None => {
                let (store, jobs, stream_manifest) = (session.store.clone(), session.jobs, manifest.clone());
                pipeline::import_snapshot_image(&engine, &id.0, &config, move || {
                    bridge::snapshot_stream(store, &stream_manifest, jobs)
                })
                .await?
            }
        };
        let tracked =
            restore::read_file(&*session.store, &manifest, TRACKED.trim_start_matches('/'), 64 << 20).await?;
        let remove = tracked
            .map(|t| envbuild_builder::workspace::removed(&String::from_utf8_lossy(&t), &plan.workspace))
            .unwrap_or_default();
        let setup = InstallSetup {
            secrets: records::env_pairs(&loaded, When::at_install),
            remove,
            cache_volume: None,
            checkpoint: None,
        };
        session.note(format!("checking idempotency: running install on snapshot {id}"));
        let run = pipeline::run_install(&engine, plan, &image, &setup, &cleanup, &mut session.output_sink())
            .await?;
        compare_with_stored(session, &engine, &run.container, id, "running install on it").await
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = session.cancel.cancelled() => Err(Error::Interrupted),
    };
    cleanup.run().await;
    outcome.map_err(Error::masked)
}

/// The secrets a Dockerfile's `RUN --mount=type=secret,id=ID` lines ask for, from the ones in
/// scope: by name, or by name ignoring case (ids are often lower case, names upper). They go to
/// the build as BuildKit secrets only, never as build args, environment or layers.
fn build_secrets(session: &Session, dockerfile: &str, secrets: &[Loaded]) -> BTreeMap<String, SecretString> {
    let mut out = BTreeMap::new();
    for id in envbuild_builder::buildkit::secret_ids(dockerfile) {
        let found = secrets
            .iter()
            .find(|s| s.name == id)
            .or_else(|| secrets.iter().find(|s| s.name.eq_ignore_ascii_case(&id)));
        match found {
            Some(secret) => {
                out.insert(id, secret.value.clone());
            }
            None => session.warn(format!(
                "the Dockerfile mounts the secret `{id}`, and no secret of that name is in scope\nhint: `envbuild secrets set {}` stores it",
                id.to_ascii_uppercase()
            )),
        }
    }
    out
}

/// The image configuration a snapshot carries (empty when it carries none).
pub fn image_config(manifest: &envbuild_cache::manifest::Manifest) -> Result<ImageConfig> {
    match &manifest.image_config {
        Some(json) => Ok(oci::from_json(json)?),
        None => Ok(ImageConfig::default()),
    }
}

/// The key manifest behind `query`: a key with a record, or a snapshot.
pub async fn key_manifest(store: &dyn Store, query: &str) -> Result<KeyManifest> {
    let id = match query.parse::<Digest>().ok() {
        Some(key) => match catalog::read_key(store, &key).await? {
            Some(record) => record.snapshot,
            None => catalog::resolve(store, query).await?,
        },
        None => catalog::resolve(store, query).await?,
    };
    let manifest = restore::read_manifest(store, &id).await?;
    let doc = manifest.keys.ok_or_else(|| {
        Error::Failed(format!("snapshot {id} records no build inputs (it was imported, not built)"))
    })?;
    serde_json::from_value(doc)
        .map_err(|e| Error::Failed(format!("the build inputs of snapshot {id} are unreadable: {e}")))
}

/// What `explain` found: the inputs that differ, and how the second build was made.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub a: KeyManifest,
    pub b: KeyManifest,
    pub differences: Vec<Difference>,
    /// How `b` was built: `incremental from <id>`, `clean`, or `not built yet` (the current
    /// tree); `None` when its key record says nothing of it.
    pub b_built: Option<String>,
}

/// How the build under env key `key` was made, from its key record.
async fn built_how(store: &dyn Store, key: &Digest) -> Result<Option<String>> {
    let Some(record) = catalog::read_key(store, key).await? else { return Ok(None) };
    Ok(match record.info.get("parent") {
        Some(serde_json::Value::String(parent)) => Some(format!("incremental from {parent}")),
        Some(serde_json::Value::Null) => Some("clean (install ran on the system image alone)".to_owned()),
        _ => None,
    })
}

/// The inputs that differ between the builds `a` and `b` (keys, snapshot ids, prefixes, refs);
/// without `b`, between `a` and the repository as it is now (`repo`).
pub async fn explain(session: &Session, a: &str, b: Option<&str>, repo: &RepoOptions) -> Result<Explanation> {
    let store = &*session.store;
    let a = key_manifest(store, a).await?;
    let (b, b_built) = match b {
        Some(b) => {
            let b = key_manifest(store, b).await?;
            let how = built_how(store, &b.env_key).await?;
            (b, how)
        }
        None => {
            let planned = plan(session, repo).await?;
            let how = match stored_snapshot(store, &planned.plan.keys.env_key).await? {
                Some(id) => format!("already built: snapshot {id}"),
                None => "not built yet".to_owned(),
            };
            (planned.plan.keys, Some(how))
        }
    };
    let differences = keys::explain(&a, &b);
    Ok(Explanation { a, b, differences, b_built })
}
