//! `envbuild boot`: a snapshot into a running environment (DESIGN §6).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use envbuild_builder::boot::{self, StartOutcome, TerminalMode};
use envbuild_builder::cleanup::Cleanup;
use envbuild_builder::docker::DockerEngine;
use envbuild_builder::engine::{ContainerEngine, ExecSpec};
use envbuild_builder::passwd::{self, User};
use envbuild_builder::secrets::When;
use envbuild_builder::{inputs, oci, pipeline};
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{Digest, SnapshotId, Store, catalog, restore};
use envbuild_schema::EnvironmentSpec;
use serde::Serialize;

use crate::cli::{BootArgs, GlobalArgs, RepoArgs};
use crate::commands::build;
use crate::{bridge, format, output, secrets, store, ui};

#[derive(Debug, Serialize)]
struct Step {
    #[serde(rename = "step")]
    name: &'static str,
    seconds: f64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    name: String,
    container: String,
    snapshot: SnapshotId,
    /// The Docker image the snapshot is imported as (`docker run` takes it too).
    image: String,
    steps: Vec<Step>,
    terminals: Vec<String>,
    terminal_mode: Option<&'static str>,
    total_seconds: f64,
}

/// Records a step and says it on stderr.
fn step(steps: &mut Vec<Step>, name: &'static str, started: Instant, detail: String) {
    let seconds = started.elapsed().as_secs_f64();
    ui::eprint_line(format!("{name:<10} {:>9}  {detail}", format::duration(started.elapsed())));
    steps.push(Step { name, seconds, detail });
}

pub async fn run(global: &GlobalArgs, args: &BootArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let store = store::open(global).await?;
    let id = match (&args.snapshot, &args.key) {
        (Some(query), _) => catalog::resolve(&*store, query).await?,
        (None, Some(key)) => {
            let key = Digest::from_str(key)?;
            catalog::read_key(&*store, &key)
                .await?
                .with_context(|| format!("no build is recorded under key {key} in {}", store.location()))?
                .snapshot
        }
        (None, None) => bail!("give a snapshot id or --key"),
    };
    let manifest = restore::read_manifest(&*store, &id).await?;
    let spec: EnvironmentSpec = match &args.repo {
        Some(repo) => {
            let loaded = build::load_config(&RepoArgs { repo: repo.clone(), ..repo_defaults() })?;
            loaded.valid_spec().cloned().context("the repository's config is invalid")?
        }
        None => manifest
            .environment
            .clone()
            .and_then(|doc| serde_json::from_value(doc).ok())
            .with_context(|| format!("snapshot {id} carries no environment.json; boot it with --repo"))?,
    };
    let known_user = user_from_snapshot(&*store, &manifest, spec.user.as_deref()).await?;
    // Every secret of the scopes, decrypted before anything starts: a failure names them all
    // and nothing boots with values missing.
    let loaded = secrets::open_all(secrets::list(&*store, &args.scopes).await?)
        .await
        .context("nothing was started: an environment boots with all of its secrets or not at all")?;
    ui::set_redaction(secrets::patterns(&loaded));
    let engine: Arc<dyn ContainerEngine> = Arc::new(DockerEngine::connect().await?);
    let name = args.name.clone().unwrap_or_else(|| format!("envbuild-{}", &id.0.hex()[..12]));
    if !engine.containers(&format!("{}={name}", boot::NAME_LABEL)).await?.is_empty() {
        bail!(
            "an environment named `{name}` exists already\nhint: stop it first with `envbuild stop {name}`, or choose another --name"
        );
    }
    let mut steps = Vec::new();

    let t = Instant::now();
    let config = manifest.image_config.as_ref().map(oci::from_json).unwrap_or_default();
    let jobs = crate::jobs(global);
    let stream_store = store.clone();
    let stream_manifest = manifest.clone();
    let image = pipeline::import_snapshot_image(&engine, &id.to_string(), &config, move || {
        bridge::snapshot_stream(stream_store, &stream_manifest, jobs)
    })
    .await?;
    step(
        &mut steps,
        "image",
        t,
        if image.reused {
            format!("{} (already imported)", short(&image.id))
        } else {
            format!("{} imported", short(&image.id))
        },
    );

    let cleanup = Cleanup::new(engine.clone());
    let outcome = boot_container(
        &engine, args, &spec, &id, &name, &image.id, known_user, &loaded, &cleanup, &mut steps,
    )
    .await;
    let (container, terminals, mode) = match outcome {
        Ok(done) => done,
        Err(e) => {
            cleanup.run().await;
            return Err(e);
        }
    };
    cleanup.keep_container(&container);
    let report = Report {
        name: name.clone(),
        container,
        snapshot: id,
        image: image.id.clone(),
        steps,
        terminals: terminals.clone(),
        terminal_mode: mode.map(|m| if m == TerminalMode::Tmux { "tmux" } else { "supervised" }),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    ui::eprint_line(format!(
        "environment `{name}` is up in {}; `envbuild logs {name}{}` shows its output, `envbuild stop {name}` ends it",
        format::duration(started.elapsed()),
        terminals.first().map(|t| format!(" {t}")).unwrap_or_default()
    ));
    if args.json {
        output::json(&report)?;
    } else {
        output::line(&name);
    }
    Ok(ExitCode::SUCCESS)
}

/// The user the environment's processes run as, resolved from the snapshot's own `/etc/passwd`
/// and `/etc/group` (read from their chunks: no container is needed, which saves two archive
/// calls to the engine); `None` when they are not plain files there, and the container's
/// copies are read instead.
async fn user_from_snapshot(
    store: &dyn Store,
    manifest: &Manifest,
    spec: Option<&str>,
) -> anyhow::Result<Option<User>> {
    const MAX: u64 = 16 << 20;
    let Some(spec) = spec.filter(|s| !s.is_empty()) else { return Ok(Some(User::root())) };
    let (passwd, group) = futures::try_join!(
        restore::read_file(store, manifest, "etc/passwd", MAX),
        restore::read_file(store, manifest, "etc/group", MAX)
    )?;
    let (Some(passwd), Some(group)) = (passwd, group) else { return Ok(None) };
    Ok(Some(passwd::resolve(spec, &String::from_utf8_lossy(&passwd), &String::from_utf8_lossy(&group))?))
}

fn repo_defaults() -> RepoArgs {
    RepoArgs {
        repo: ".".into(),
        input: Vec::new(),
        env: Vec::new(),
        build_arg: Vec::new(),
        network: crate::cli::NetworkArg::Host,
        scopes: Vec::new(),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(19)]
}

#[allow(clippy::too_many_arguments)]
async fn boot_container(
    engine: &Arc<dyn ContainerEngine>,
    args: &BootArgs,
    spec: &EnvironmentSpec,
    id: &SnapshotId,
    name: &str,
    image: &str,
    known_user: Option<User>,
    loaded: &[secrets::Loaded],
    cleanup: &Cleanup,
    steps: &mut Vec<Step>,
) -> anyhow::Result<(String, Vec<String>, Option<TerminalMode>)> {
    let t = Instant::now();
    let terminal_list: Vec<(String, String)> =
        spec.terminals().into_iter().map(|t| (t.name, t.terminal.command.clone())).collect();
    let labels = BTreeMap::from([
        (boot::SNAPSHOT_LABEL.to_owned(), id.to_string()),
        (
            boot::SCOPES_LABEL.to_owned(),
            args.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        ),
        (
            boot::TERMINALS_LABEL.to_owned(),
            terminal_list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
        ),
    ]);
    let env =
        secrets::env_pairs(loaded, When::at_boot).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let container = boot::create(
        engine,
        &boot::EnvironmentSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            env,
            labels,
            network: args.network.into(),
        },
    )
    .await?;
    cleanup.container(&container);
    let user = match known_user {
        Some(user) => user,
        None => pipeline::resolve_user(engine, &container, spec.user.as_deref()).await?,
    };
    let mut detail =
        format!("{} as {} ({})", &container[..12.min(container.len())], user.spec, user.engine_spec());
    let mut files = None;
    if let Some(repo) = &args.repo {
        let repo =
            std::fs::canonicalize(repo).with_context(|| format!("cannot open `{}`", repo.display()))?;
        let tree = tokio::task::spawn_blocking(move || inputs::collect(&repo, &[])).await??;
        let _ = write!(detail, "; {} repository files at /workspace", tree.entries.len());
        files = Some(tree.tar_stream("workspace/".to_owned(), (user.uid, user.gid)));
    }
    boot::populate_and_start(engine, &container, files).await?;
    step(steps, "container", t, detail);

    if let Some(install) = spec.install.as_ref().filter(|i| !i.trim().is_empty()) {
        let t = Instant::now();
        let install_env = secrets::env_pairs(loaded, When::at_install)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exec = ExecSpec {
            cmd: vec!["sh".into(), "-c".into(), install.clone()],
            user: Some(user.engine_spec()),
            working_dir: Some(pipeline::WORKSPACE.to_owned()),
            env: install_env,
        };
        let (code, _) =
            boot::exec_to_end(engine, &container, &exec, Some(&mut ui::RedactingSink::new())).await?;
        if code != 0 {
            bail!("install failed at boot with exit code {code}; the environment was removed");
        }
        step(steps, "install", t, "done".into());
    }
    if let Some(start) = spec.start.as_ref().filter(|s| !s.trim().is_empty()) {
        let t = Instant::now();
        let detail = match boot::start(engine, &container, start, &user.engine_spec(), args.start_wait)
            .await?
        {
            StartOutcome::Exited(0) => "done".to_owned(),
            StartOutcome::Exited(code) => {
                bail!("start failed with exit code {code} (see `envbuild logs {name} start`)")
            }
            StartOutcome::Running => {
                format!("still running after {}: left in the background", format::duration(args.start_wait))
            }
        };
        step(steps, "start", t, detail);
    }
    let mut mode = None;
    if !terminal_list.is_empty() {
        let t = Instant::now();
        let started = boot::terminals(engine, &container, &terminal_list, &user.engine_spec()).await?;
        let names: Vec<&str> = terminal_list.iter().map(|(n, _)| n.as_str()).collect();
        let how = match &started {
            TerminalMode::Tmux => "in tmux session `envbuild`".to_owned(),
            TerminalMode::Supervised { tmux_failed: None } => "supervised".to_owned(),
            TerminalMode::Supervised { tmux_failed: Some(why) } => {
                format!("supervised, as tmux cannot start: {why}")
            }
        };
        step(steps, "terminals", t, format!("{} running, {how}", names.join(", ")));
        mode = Some(started);
    }
    Ok((container, terminal_list.into_iter().map(|(n, _)| n).collect(), mode))
}
