//! The boot workflow: a snapshot into a running environment (DESIGN §6): the image, the
//! environment's container with the repository at `/workspace`, then `install`, `start` and
//! the terminals. Each step is reported with its time as it ends; a step that fails removes
//! the environment again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envbuild_builder::boot::{self, StartOutcome, TerminalMode};
use envbuild_builder::cleanup::Cleanup;
use envbuild_builder::engine::{ContainerEngine, ExecSpec, Network, PortMapping};
use envbuild_builder::passwd::{self, User};
use envbuild_builder::{inputs, pipeline};
use envbuild_cache::manifest::Manifest;
use envbuild_cache::{Digest, SnapshotId, Store, catalog, restore};
use envbuild_schema::EnvironmentSpec;
use envbuild_secrets::{Loaded, Scope, When, records};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::runtime::trees::Trees;
use crate::runtime::{self, Runc};
use crate::session::Session;
use crate::{bridge, build, config, format};

/// Which snapshot to boot.
#[derive(Debug, Clone)]
pub enum Target {
    /// An id, a unique prefix, or a ref name.
    Snapshot(String),
    /// The snapshot this env key points at.
    Key(Digest),
}

#[derive(Debug, Clone)]
pub struct BootOptions {
    pub target: Target,
    /// Copy this repository's tracked files to `/workspace` and use its environment.json
    /// (default: the snapshot's own `/workspace` and config).
    pub repo: Option<PathBuf>,
    /// The environment's name (default: `envbuild-<snapshot id prefix>`).
    pub name: Option<String>,
    /// Environment groups the environment is in, beside its repository's own.
    pub groups: Vec<String>,
    pub network: Network,
    /// How long to wait for `start` to finish before leaving it running in the background.
    pub start_wait: Duration,
    /// Which engine runs the environment.
    pub engine: EngineChoice,
    /// Host ports asked for container ports (the others get free ones).
    pub publish: Vec<PortMapping>,
    /// How long to wait for every declared port to listen; `None` does not wait.
    pub ready_wait: Option<Duration>,
}

/// Which engine runs an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// runc when this host can run it (root, runc, pasta), else Docker.
    #[default]
    Auto,
    Runc,
    Docker,
}

/// The engine an environment runs on, and how its image is made.
enum Chosen {
    Runc(Arc<Runc>),
    Docker(Arc<dyn ContainerEngine>),
}

impl Chosen {
    fn engine(&self) -> Arc<dyn ContainerEngine> {
        match self {
            Chosen::Runc(runc) => runc.clone(),
            Chosen::Docker(engine) => engine.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Chosen::Runc(_) => "runc",
            Chosen::Docker(_) => "docker",
        }
    }
}

/// The engine `choice` names on this host.
async fn choose(session: &Session, choice: EngineChoice, network: Network) -> Result<Chosen> {
    let runc = || Chosen::Runc(Arc::new(Runc::new(runtime::Layout::from_env())));
    match choice {
        EngineChoice::Runc => match runtime::unavailable_because(network == Network::Private) {
            None => Ok(runc()),
            Some(why) => Err(Error::Failed(format!(
                "cannot boot on runc: {why}\nhint: `--engine docker` boots on the Docker engine instead"
            ))),
        },
        EngineChoice::Auto if runtime::unavailable_because(network == Network::Private).is_none() => {
            Ok(runc())
        }
        EngineChoice::Auto | EngineChoice::Docker => Ok(Chosen::Docker(session.engine.get().await?)),
    }
}

/// One step of a boot and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    #[serde(rename = "step")]
    pub name: &'static str,
    pub seconds: f64,
    pub detail: String,
}

/// What a boot made.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub name: String,
    pub container: String,
    pub snapshot: SnapshotId,
    /// The Docker image the snapshot is imported as (`docker run` takes it too).
    pub image: String,
    pub steps: Vec<Step>,
    pub terminals: Vec<String>,
    pub terminal_mode: Option<&'static str>,
    /// `runc` or `docker`.
    pub engine: &'static str,
    /// Published ports: container port on host port.
    pub ports: Vec<PortMapping>,
    /// From the start of the boot to its terminals running.
    pub terminals_seconds: f64,
    /// From the start of the boot to every declared port listening (when boot waited).
    pub ready_seconds: Option<f64>,
    pub total_seconds: f64,
}

/// The steps so far, each reported as it ends.
struct Steps<'a> {
    session: &'a Session,
    done: Vec<Step>,
}

impl Steps<'_> {
    fn record(&mut self, name: &'static str, started: Instant, detail: String) {
        let seconds = started.elapsed().as_secs_f64();
        self.session.note(format!("{name:<10} {:>9}  {detail}", format::duration(started.elapsed())));
        self.done.push(Step { name, seconds, detail });
    }
}

/// The snapshot `target` names.
pub async fn resolve(store: &dyn Store, target: &Target) -> Result<SnapshotId> {
    match target {
        Target::Snapshot(query) => Ok(catalog::resolve(store, query).await?),
        Target::Key(key) => Ok(catalog::read_key(store, key)
            .await?
            .ok_or_else(|| {
                Error::Failed(format!("no build is recorded under key {key} in {}", store.location()))
            })?
            .snapshot),
    }
}

/// Boots a snapshot into a new, named environment.
pub async fn boot(session: &Session, options: &BootOptions) -> Result<BootReport> {
    let started = Instant::now();
    let store = &session.store;
    let id = resolve(&**store, &options.target).await?;
    let manifest = restore::read_manifest(&**store, &id).await?;
    let spec: EnvironmentSpec = match &options.repo {
        Some(repo) => config::load(session, repo)?
            .valid_spec()
            .cloned()
            .ok_or_else(|| Error::Failed("the repository's config is invalid".into()))?,
        None => manifest.environment.clone().and_then(|doc| serde_json::from_value(doc).ok()).ok_or_else(
            || Error::Failed(format!("snapshot {id} carries no environment.json; boot it with --repo")),
        )?,
    };
    let known_user = user_from_snapshot(&**store, &manifest, spec.user.as_deref()).await?;
    // Every secret of the scopes, decrypted before anything starts: a failure names them all
    // and nothing boots with values missing.
    let scopes = boot_scopes(&**store, &manifest, options).await?;
    let found = records::list(&**store, &scopes).await?;
    let loaded = build::open_secrets(session, found).await.map_err(|e| {
        e.context("nothing was started: an environment boots with all of its secrets or not at all")
    })?;
    let chosen = choose(session, options.engine, options.network).await?;
    let engine = chosen.engine();
    let name = options.name.clone().unwrap_or_else(|| format!("envbuild-{}", &id.0.hex()[..12]));
    if crate::envs::exists(session, &name).await? {
        return Err(Error::Failed(format!(
            "an environment named `{name}` exists already\nhint: remove it first with `envbuild rm {name}`, or choose another --name"
        )));
    }
    let ports = port_mappings(&spec, &options.publish, &chosen, options.network)?;
    let mut steps = Steps { session, done: Vec::new() };

    let t = Instant::now();
    // Held until the environment's record names the tree, so no `rm` or eviction takes it.
    let mut _tree_lock = None;
    let image = match &chosen {
        Chosen::Runc(runc) => {
            let trees = Trees::new(runc.layout().clone());
            let (made, lock) = trees.materialize(store.clone(), &id, &manifest, session.jobs).await?;
            _tree_lock = Some(lock);
            let detail = if made.reused {
                "already on this host".to_owned()
            } else {
                format!(
                    "{} files, {} shared with other trees, {} new",
                    made.files,
                    made.shared_files,
                    format::bytes(made.new_bytes)
                )
            };
            steps.record("tree", t, detail);
            trees.path(&id).display().to_string()
        }
        Chosen::Docker(_) => {
            let config = build::image_config(&manifest)?;
            let (stream_store, stream_manifest, jobs) = (store.clone(), manifest.clone(), session.jobs);
            let image = pipeline::import_snapshot_image(&engine, &id.0, &config, move || {
                bridge::snapshot_stream(stream_store, &stream_manifest, jobs)
            })
            .await?;
            let short_image: String = image.id.chars().take(19).collect();
            steps.record(
                "image",
                t,
                if image.reused {
                    format!("{short_image} (already imported)")
                } else {
                    format!("{short_image} imported")
                },
            );
            image.id
        }
    };

    let cleanup = Cleanup::new(engine.clone());
    let environment = Environment {
        engine: &engine,
        options,
        spec: &spec,
        id: &id,
        name: &name,
        secrets: &loaded,
        scopes: &scopes,
        ports: &ports,
    };
    let outcome = tokio::select! {
        outcome = environment.start(&image, known_user, &cleanup, &mut steps) => outcome,
        () = session.cancel.cancelled() => Err(Error::Interrupted),
    };
    let (container, terminals, mode) = match outcome {
        Ok(done) => done,
        Err(e) => {
            cleanup.run().await;
            return Err(e.masked());
        }
    };
    let terminals_seconds = started.elapsed().as_secs_f64();
    cleanup.keep_container(&container);
    if let Chosen::Runc(runc) = &chosen {
        runc.mark_complete(&name)?;
    }
    let ready_seconds = match options.ready_wait {
        Some(wait) if !spec.ports.is_empty() => {
            let t = Instant::now();
            let declared: Vec<u16> = spec.ports.iter().map(|p| p.port).collect();
            let missing = wait_for_ports(&engine, &container, &declared, wait, &session.cancel).await?;
            if !missing.is_empty() {
                return Err(Error::Failed(format!(
                    "port{} {} of environment `{name}` did not listen within {}; the environment stays up\nhint: `envbuild logs {name}` shows why; `envbuild rm {name}` removes it",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    format::duration(wait)
                )));
            }
            steps.record("ready", t, describe_ports(&ports));
            Some(started.elapsed().as_secs_f64())
        }
        _ => None,
    };
    session.note(format!(
        "environment `{name}` is up in {}{}; `envbuild logs {name}{}` shows its output, `envbuild exec {name} -- CMD` runs a command in it, `envbuild rm {name}` removes it",
        format::duration(started.elapsed()),
        if ports.is_empty() { String::new() } else { format!(" ({})", describe_ports(&ports)) },
        terminals.first().map(|t| format!(" {t}")).unwrap_or_default()
    ));
    Ok(BootReport {
        name,
        container,
        snapshot: id,
        image,
        steps: steps.done,
        terminals,
        terminal_mode: mode.map(|m| if m == TerminalMode::Tmux { "tmux" } else { "supervised" }),
        engine: chosen.name(),
        ports,
        terminals_seconds,
        ready_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `port 3000 on host 41234, ...`.
fn describe_ports(ports: &[PortMapping]) -> String {
    ports.iter().map(|p| format!("port {} on host {}", p.container, p.host)).collect::<Vec<_>>().join(", ")
}

/// The host port of each port the config declares: the one `publish` asks for, else a free
/// one (runc), or the same port (the host's network, which Docker environments are on);
/// none without a network.
fn port_mappings(
    spec: &EnvironmentSpec,
    publish: &[PortMapping],
    chosen: &Chosen,
    network: Network,
) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    // Without a network nothing is published; the ports are still waited for inside.
    if network == Network::None {
        return Ok(out);
    }
    for asked in publish {
        if !spec.ports.iter().any(|p| p.port == asked.container) {
            return Err(Error::Failed(format!(
                "--publish names port {}, which the config does not declare\nhint: its `ports` are {}",
                asked.container,
                spec.ports.iter().map(|p| p.port.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    for port in &spec.ports {
        let host = match (publish.iter().find(|p| p.container == port.port), chosen) {
            (_, Chosen::Docker(_)) => port.port,
            _ if network == Network::Host => port.port,
            (Some(asked), Chosen::Runc(_)) => {
                runtime::net::check_free(asked.host)?;
                asked.host
            }
            (None, Chosen::Runc(_)) => runtime::net::free_port()?,
        };
        out.push(PortMapping { host, container: port.port });
    }
    Ok(out)
}

/// Waits until each of `ports` listens in the environment, up to `wait`; the ones that did
/// not.
async fn wait_for_ports(
    engine: &Arc<dyn ContainerEngine>,
    container: &str,
    ports: &[u16],
    wait: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<u16>> {
    let deadline = Instant::now() + wait;
    loop {
        let listening = boot::listening(engine, container).await?;
        let missing: Vec<u16> = ports.iter().copied().filter(|p| !listening.contains(p)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return Ok(missing);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = cancel.cancelled() => return Err(Error::Interrupted),
        }
    }
}

/// The scopes an environment sees: its repository's (with `--repo`, that repository; else the
/// one the snapshot was built from, as its key record says), the groups it is given, and the
/// workspace.
async fn boot_scopes(store: &dyn Store, manifest: &Manifest, options: &BootOptions) -> Result<Vec<Scope>> {
    if let Some(repo) = &options.repo {
        return crate::secrets::scopes_of_repository(repo, &options.groups);
    }
    let env_key = manifest
        .keys
        .as_ref()
        .and_then(|k| k.get("env_key"))
        .and_then(|k| k.as_str())
        .and_then(|k| k.parse().ok());
    let repository = match env_key {
        Some(key) => catalog::read_key(store, &key)
            .await?
            .and_then(|record| record.info.get("repository").and_then(|r| r.as_str()).map(str::to_owned)),
        None => None,
    };
    match repository {
        Some(repository) => crate::secrets::scopes_of(&repository, None, &options.groups),
        None => {
            let mut scopes: Vec<Scope> = options
                .groups
                .iter()
                .map(|g| format!("env:{g}").parse())
                .collect::<std::result::Result<_, _>>()?;
            scopes.push(Scope::Workspace);
            Ok(scopes)
        }
    }
}

/// The user the environment's processes run as, resolved from the snapshot's own `/etc/passwd`
/// and `/etc/group` (read from their chunks: no container is needed, which saves two archive
/// calls to the engine); `None` when they are not plain files there, and the container's
/// copies are read instead.
async fn user_from_snapshot(
    store: &dyn Store,
    manifest: &Manifest,
    spec: Option<&str>,
) -> Result<Option<User>> {
    const MAX: u64 = 16 << 20;
    let Some(spec) = spec.filter(|s| !s.is_empty()) else { return Ok(Some(User::root())) };
    let (passwd, group) = futures::try_join!(
        restore::read_file(store, manifest, "etc/passwd", MAX),
        restore::read_file(store, manifest, "etc/group", MAX)
    )?;
    let (Some(passwd), Some(group)) = (passwd, group) else { return Ok(None) };
    Ok(Some(passwd::resolve(spec, &String::from_utf8_lossy(&passwd), &String::from_utf8_lossy(&group))?))
}

/// The settings the environment's processes see as variables: where its config is, whether
/// browser testing is on, and where Chrome is (`chromeExecutablePath`).
pub fn settings_env(spec: &EnvironmentSpec) -> Vec<String> {
    let mut env = vec![
        format!("ENVBUILD_CONFIG={}", boot::CONFIG_PATH),
        format!("ENVBUILD_ENABLE_TESTING={}", spec.testing_enabled()),
    ];
    if let Some(chrome) = &spec.chrome_executable_path {
        env.push(format!("ENVBUILD_CHROME_EXECUTABLE_PATH={chrome}"));
    }
    env
}

/// One environment being started.
struct Environment<'a> {
    engine: &'a Arc<dyn ContainerEngine>,
    options: &'a BootOptions,
    spec: &'a EnvironmentSpec,
    id: &'a SnapshotId,
    name: &'a str,
    secrets: &'a [Loaded],
    scopes: &'a [Scope],
    ports: &'a [PortMapping],
}

impl Environment<'_> {
    /// The container, install, start and the terminals; returns the container, the terminal
    /// names and how they run.
    async fn start(
        &self,
        image: &str,
        known_user: Option<User>,
        cleanup: &Cleanup,
        steps: &mut Steps<'_>,
    ) -> Result<(String, Vec<String>, Option<TerminalMode>)> {
        let (engine, options, spec, name) = (self.engine, self.options, self.spec, self.name);
        let t = Instant::now();
        let terminal_list: Vec<(String, String)> =
            spec.terminals().into_iter().map(|t| (t.name, t.terminal.command.clone())).collect();
        let labels = BTreeMap::from([
            (boot::SNAPSHOT_LABEL.to_owned(), self.id.to_string()),
            (
                boot::SCOPES_LABEL.to_owned(),
                self.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ),
            (
                boot::TERMINALS_LABEL.to_owned(),
                terminal_list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
            ),
            (
                boot::PORTS_LABEL.to_owned(),
                self.ports
                    .iter()
                    .map(|p| format!("{}:{}", p.host, p.container))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]);
        let env = settings_env(spec);
        let container = boot::create(
            engine,
            &boot::EnvironmentSpec {
                name: name.to_owned(),
                image: image.to_owned(),
                env,
                labels,
                network: options.network,
                ports: self.ports.to_vec(),
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
        if let Some(repo) = &options.repo {
            let repo = std::fs::canonicalize(repo)
                .map_err(Error::io(format!("cannot open `{}`", repo.display())))?;
            let tree = tokio::task::spawn_blocking(move || inputs::workspace_files(&repo))
                .await
                .map_err(|e| Error::Failed(format!("reading the repository stopped: {e}")))??;
            let _ = write!(detail, "; {} repository files (with .git) at /workspace", tree.entries.len());
            files = Some(tree.tar_stream("workspace/".to_owned(), (user.uid, user.gid)));
        }
        let config = serde_json::to_vec_pretty(&spec.normalized())
            .map_err(|e| Error::Failed(format!("the environment's config cannot be encoded: {e}")))?;
        boot::populate_and_start(engine, &container, &config, files).await?;
        steps.record("container", t, detail);

        if let Some(install) = spec.install.as_ref().filter(|i| !i.trim().is_empty()) {
            let t = Instant::now();
            // Install's secrets first, in the tmpfs file install's prelude reads.
            pipeline::write_secrets(
                engine,
                &container,
                &user,
                &records::env_pairs(self.secrets, When::at_install),
            )
            .await?;
            let exec = ExecSpec {
                cmd: envbuild_builder::workspace::with_prelude(install),
                user: Some(user.engine_spec()),
                working_dir: Some(pipeline::WORKSPACE.to_owned()),
                env: Vec::new(),
                stdin: None,
            };
            let (code, _, _) =
                pipeline::exec_to_end(engine, &container, &exec, Some(&mut steps.session.output_sink()))
                    .await?;
            if code != 0 {
                return Err(Error::Failed(format!(
                    "install failed at boot with exit code {code}; the environment was removed"
                )));
            }
            steps.record("install", t, "done".into());
        }
        // From now on the file holds the boot secrets: start, the terminals and exec see them.
        pipeline::write_secrets(engine, &container, &user, &records::env_pairs(self.secrets, When::at_boot))
            .await?;
        if let Some(start) = spec.start.as_ref().filter(|s| !s.trim().is_empty()) {
            let t = Instant::now();
            let detail = match boot::start(engine, &container, start, &user.engine_spec(), options.start_wait)
                .await?
            {
                StartOutcome::Exited(0) => "done".to_owned(),
                StartOutcome::Exited(code) => {
                    return Err(Error::Failed(format!(
                        "start failed with exit code {code} (see `envbuild logs {name} start`)"
                    )));
                }
                StartOutcome::Running => {
                    format!(
                        "still running after {}: left in the background",
                        format::duration(options.start_wait)
                    )
                }
            };
            steps.record("start", t, detail);
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
            steps.record("terminals", t, format!("{} running, {how}", names.join(", ")));
            mode = Some(started);
        }
        Ok((container, terminal_list.into_iter().map(|(n, _)| n).collect(), mode))
    }
}
