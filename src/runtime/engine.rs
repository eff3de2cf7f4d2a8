//! [`Runc`]: the container side of [`ContainerEngine`] on runc, so the boot workflow (the
//! runner, install, start, the terminals, logs, secrets) is the same code on either engine.
//!
//! A container is an environment directory (see the parent module): `create_container`
//! records it in `env.json`, then makes each part (the overlay mount, the network namespace
//! and pasta, the spec, `runc create`), recording each before it exists, so that
//! [`Runc::teardown`] (on `stop`, `rm`, a failed boot, or `gc` after a crash) can undo
//! exactly what is there. Processes run with `runc exec`; their output is piped back and the
//! exit code recorded before the stream ends. Images are not this engine's business: it takes
//! a materialized tree ([`super::trees`]) as the container's `image`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use envbuild_builder::engine::{
    BuildRequest, BuildStream, ByteStream, ContainerEngine, ContainerInfo, ContainerSpec, EngineError,
    ExecSpec, ImageConfig, ImageInfo, Network, Output, OutputStream, PortMapping,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Layout, inroot, net, spec};

/// The record of an environment directory: what was made for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvRecord {
    pub name: String,
    /// The read-only tree under its overlay.
    pub lower: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    pub ports: Vec<PortMapping>,
    /// The network namespace, once asked for.
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub pasta_pid: Option<u32>,
    /// Whether the overlay may be mounted (set before mounting).
    #[serde(default)]
    pub mounted: bool,
    /// Whether a runc container may exist (set before `runc create`).
    #[serde(default)]
    pub container: bool,
    /// The envbuild process making it; `complete` once its boot finished. An incomplete
    /// record whose maker is gone is what a crash left, and `gc` removes it.
    pub maker: u32,
    #[serde(default)]
    pub complete: bool,
    /// Stopped: its processes, mount and network are gone; its upper directory (logs) stays.
    #[serde(default)]
    pub stopped: bool,
}

/// runc, as a container engine for environments.
#[derive(Debug)]
pub struct Runc {
    layout: Layout,
    program: PathBuf,
    /// Exit codes of execs by id, once known.
    execs: Arc<Mutex<HashMap<String, Option<i64>>>>,
}

/// What `runc list --format json` says of one container.
#[derive(Debug, Clone, Deserialize)]
struct RuncState {
    id: String,
    status: String,
    #[serde(default)]
    pid: u32,
}

fn failed(operation: &str, message: impl std::fmt::Display) -> EngineError {
    EngineError::Runtime { operation: operation.to_owned(), message: message.to_string() }
}

fn io_failed(operation: &str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let operation = operation.to_owned();
    let path = path.display().to_string();
    move |e| EngineError::Runtime { operation, message: format!("`{path}`: {e}") }
}

impl Runc {
    pub fn new(layout: Layout) -> Self {
        let program = super::which("runc").unwrap_or_else(|| PathBuf::from("runc"));
        Self { layout, program, execs: Arc::default() }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.arg("--root").arg(self.layout.runc_root());
        command
    }

    /// Runs `runc ARGS` to its end; its output.
    async fn runc(&self, operation: &str, args: &[&str]) -> Result<Vec<u8>, EngineError> {
        let mut command = self.command();
        command.args(args);
        super::run(operation, "runc", command).await
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.layout.env(name).join("env.json")
    }

    /// The record of environment `name`.
    pub fn record(&self, name: &str) -> Option<EnvRecord> {
        let text = std::fs::read(self.record_path(name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn save(&self, record: &EnvRecord) -> Result<(), EngineError> {
        let path = self.record_path(&record.name);
        let text = serde_json::to_vec_pretty(record).map_err(|e| failed("record the environment", e))?;
        let temporary = path.with_extension("json.new");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(io_failed("record the environment", &path))
    }

    /// Every environment directory's record (unreadable ones are skipped).
    pub fn records(&self) -> Vec<EnvRecord> {
        let Ok(entries) = std::fs::read_dir(self.layout.envs()) else { return Vec::new() };
        let mut out: Vec<EnvRecord> =
            entries.filter_map(|e| self.record(e.ok()?.file_name().to_str()?)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The environment names with a directory but no readable record (a crash before the
    /// first write): `gc` removes them.
    pub fn unrecorded(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.layout.envs()) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| self.record(name).is_none())
            .collect()
    }

    async fn states(&self) -> Result<Vec<RuncState>, EngineError> {
        if !self.layout.runc_root().exists() {
            return Ok(Vec::new());
        }
        let out = self.runc("list the environments", &["list", "--format", "json"]).await?;
        let states: Option<Vec<RuncState>> =
            serde_json::from_slice(&out).map_err(|e| failed("list the environments", e))?;
        Ok(states.unwrap_or_default())
    }

    /// The ids of runc's containers in this runtime directory, with a record or without.
    pub async fn container_ids(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.states().await?.into_iter().map(|s| s.id).collect())
    }

    async fn state(&self, name: &str) -> Result<Option<RuncState>, EngineError> {
        Ok(self.states().await?.into_iter().find(|s| s.id == name))
    }

    /// The root file system of environment `name` as the host sees it: the overlay while it
    /// runs, its upper directory (what it wrote, logs included) once stopped.
    pub fn files(&self, name: &str) -> PathBuf {
        let dir = self.layout.env(name);
        match self.record(name) {
            Some(record) if record.mounted && !record.stopped => dir.join("rootfs"),
            _ => dir.join("upper"),
        }
    }

    /// The network namespace name of environment `name`.
    pub fn netns_name(&self, name: &str) -> String {
        format!("{}{name}", self.netns_prefix())
    }

    /// What every network namespace of this runtime directory starts with.
    pub fn netns_prefix(&self) -> String {
        format!("envbuild-{}-", self.layout.tag())
    }

    /// Marks environment `name` complete: its boot finished, it is no crash's leftover.
    pub fn mark_complete(&self, name: &str) -> Result<(), EngineError> {
        let mut record =
            self.record(name).ok_or_else(|| failed("record the environment", "it has no record"))?;
        record.complete = true;
        self.save(&record)
    }

    /// Undoes what the record says was made, newest first, keeping the upper directory and
    /// the record (marked stopped) unless `remove`. Each step runs even when one before it
    /// failed; the first failure is returned at the end.
    pub async fn teardown(&self, name: &str, remove: bool) -> Result<(), EngineError> {
        let dir = self.layout.env(name);
        let Some(mut record) = self.record(name) else {
            if remove && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io_failed("remove the environment", &dir))?;
            }
            return Ok(());
        };
        let mut errors: Vec<EngineError> = Vec::new();
        let mut note = |result: Result<(), EngineError>| errors.extend(result.err());
        if record.container {
            if self.state(name).await.ok().flatten().is_some() {
                note(self.runc("remove the container", &["delete", "--force", name]).await.map(|_| ()));
            }
            record.container = false;
        }
        if let Some(pid) = record.pasta_pid.take() {
            net::stop_pasta(pid);
        }
        if let Some(netns) = record.netns.take() {
            note(net::delete_netns(&netns).await);
        }
        if record.mounted {
            let rootfs = dir.join("rootfs");
            match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
                Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => record.mounted = false,
                Err(e) => note(Err(failed(
                    "unmount the environment's root",
                    format!("`{}`: {e}", rootfs.display()),
                ))),
            }
        }
        if remove && errors.is_empty() {
            return std::fs::remove_dir_all(&dir).map_err(io_failed("remove the environment", &dir));
        }
        record.stopped = true;
        errors.extend(self.save(&record).err());
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    /// The `runc exec` of `cmd` in environment `name` as `user` in `cwd`, a terminal when
    /// `tty`: `envbuild exec` and `shell` choose its standard streams.
    pub fn exec_command(
        &self,
        name: &str,
        user: &str,
        cwd: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<tokio::process::Command, EngineError> {
        let mut command = self.command();
        command.args(["exec", "--user", &spec::exec_user(user)?, "--cwd", cwd]);
        if tty {
            command.arg("--tty");
        }
        command.arg(name).args(cmd);
        Ok(command)
    }

    fn unsupported(operation: &'static str) -> EngineError {
        EngineError::Unsupported { engine: "runc", operation }
    }

    /// Makes what `create_container` makes, recording each part first.
    async fn make(
        &self,
        name: &str,
        spec: &ContainerSpec,
        record: &mut EnvRecord,
    ) -> Result<(), EngineError> {
        let dir = self.layout.env(name);
        for sub in ["rootfs", "upper", "work"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_failed("create the environment", &path))?;
        }
        record.mounted = true;
        self.save(record)?;
        let rootfs = dir.join("rootfs");
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            record.lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let data = std::ffi::CString::new(options).map_err(|e| failed("mount the environment's root", e))?;
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| {
            failed("mount the environment's root", format!("overlay on `{}`: {e}", rootfs.display()))
        })?;

        let netns_path = match spec.network {
            Network::Private => {
                let netns = self.netns_name(name);
                record.netns = Some(netns.clone());
                self.save(record)?;
                net::create_netns(&netns).await?;
                let pid = net::start_pasta(&netns, &spec.ports, &dir.join("pasta.pid")).await?;
                record.pasta_pid = Some(pid);
                self.save(record)?;
                Some(net::netns_path(&netns))
            }
            Network::Host | Network::None => None,
        };
        let resolv_conf = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        std::fs::write(&resolv_conf, net::resolv_conf())
            .map_err(io_failed("create the environment", &resolv_conf))?;
        std::fs::write(
            &hosts,
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{name}\n"),
        )
        .map_err(io_failed("create the environment", &hosts))?;
        let files = spec::Files {
            rootfs: &rootfs,
            resolv_conf: &resolv_conf,
            hosts: &hosts,
            netns: netns_path.as_deref(),
        };
        let built = spec::build(spec, name, &files)?;
        let config = dir.join("config.json");
        let text = serde_json::to_vec_pretty(&built).map_err(|e| failed("write the runtime spec", e))?;
        std::fs::write(&config, text).map_err(io_failed("write the runtime spec", &config))?;

        record.container = true;
        self.save(record)?;
        // The container's first process keeps the standard streams runc create is given, so
        // they are a file (runc's own errors land there too), never a pipe this process
        // would wait on for ever.
        let log = dir.join("init.log");
        let stderr = std::fs::File::create(&log).map_err(io_failed("create the container", &log))?;
        let status = self
            .command()
            .args(["create", "--bundle"])
            .arg(&dir)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .await
            .map_err(|e| failed("create the container", format!("cannot run runc: {e}")))?;
        if !status.success() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(failed("create the container", said.trim()));
        }
        Ok(())
    }
}

/// Whether a container's labels match a Docker-style label filter (`KEY` or `KEY=VALUE`).
fn matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

/// A child's pipe as output pieces.
fn pieces<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    wrap: fn(Bytes) -> Output,
) -> impl futures::Stream<Item = Result<Output, EngineError>> + Send {
    futures::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        let mut buf = vec![0u8; 64 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(wrap(Bytes::from(buf))), Some(reader)))
            }
            Err(e) => Some((Err(failed("read a command's output", e)), None)),
        }
    })
}

#[async_trait]
impl ContainerEngine for Runc {
    fn endpoint(&self) -> String {
        format!("runc (state in {})", self.layout.root().display())
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        Ok(Path::new(reference).is_dir().then(|| ImageInfo {
            id: reference.to_owned(),
            config: ImageConfig::default(),
            labels: BTreeMap::new(),
            layers: 1,
        }))
    }

    async fn pull(&self, _reference: &str) -> Result<ImageInfo, EngineError> {
        Err(Self::unsupported("pull images"))
    }

    async fn build(&self, _request: BuildRequest) -> Result<BuildStream, EngineError> {
        Err(Self::unsupported("build images"))
    }

    async fn import(
        &self,
        _tar: ByteStream,
        _reference: &str,
        _config: &ImageConfig,
        _labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        Err(Self::unsupported("import images"))
    }

    async fn remove_image(&self, _id: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn commit(
        &self,
        _container: &str,
        _reference: &str,
        _config: &ImageConfig,
        _labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        Err(Self::unsupported("commit containers"))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let name = spec.name.clone().ok_or_else(|| failed("create the container", "it has no name"))?;
        if !super::valid_name(&name) {
            return Err(failed(
                "create the container",
                format!("`{name}` is not a valid name (letters, digits, `-`, `_`, `.`; at most 63)"),
            ));
        }
        if !spec.volumes.is_empty() {
            return Err(Self::unsupported("mount volumes"));
        }
        let lower = PathBuf::from(&spec.image);
        if !lower.is_dir() || [",", ":"].iter().any(|c| spec.image.contains(c)) {
            return Err(failed(
                "create the container",
                format!("`{}` is not a materialized tree", spec.image),
            ));
        }
        let dir = self.layout.env(&name);
        std::fs::create_dir_all(self.layout.envs()).map_err(io_failed("create the environment", &dir))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(failed(
                    "create the container",
                    format!("an environment named `{name}` exists already"),
                ));
            }
            Err(e) => return Err(io_failed("create the environment", &dir)(e)),
        }
        let mut record = EnvRecord {
            name: name.clone(),
            lower,
            labels: spec.labels.clone(),
            network: spec.network,
            ports: spec.ports.clone(),
            netns: None,
            pasta_pid: None,
            mounted: false,
            container: false,
            maker: std::process::id(),
            complete: false,
            stopped: false,
        };
        self.save(&record)?;
        if let Err(e) = self.make(&name, spec, &mut record).await {
            let _ = self.teardown(&name, true).await;
            return Err(e);
        }
        Ok(name)
    }

    async fn upload(&self, container: &str, path: &str, tar: ByteStream) -> Result<(), EngineError> {
        let target = self.layout.env(container).join("rootfs").join(path.trim_start_matches('/'));
        let reader = crate::bridge::stream_reader(tar);
        let options =
            envbuild_cache::extract::ExtractOptions { same_owner: true, devices: false, replace: false };
        let shown = target.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            envbuild_cache::extract::extract(&mut reader, &target, &options)
        })
        .await
        .map_err(|e| failed("copy files into the environment", e))?
        .map_err(|e| failed("copy files into the environment", format!("`{}`: {e}", shown.display())))?;
        Ok(())
    }

    async fn download(&self, container: &str, path: &str) -> Result<Option<Bytes>, EngineError> {
        const MAX: u64 = 64 << 20;
        let root = self.files(container);
        let Some(bytes) =
            inroot::read_tail(&root, path, MAX).map_err(|e| failed("read a file of the environment", e))?
        else {
            return Ok(None);
        };
        // As the Docker engine answers: a tar of the one file.
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("file");
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| failed("read a file of the environment", e))?;
        let tar = builder.into_inner().map_err(|e| failed("read a file of the environment", e))?;
        Ok(Some(Bytes::from(tar)))
    }

    async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.runc("start the container", &["start", container]).await.map(|_| ())
    }

    async fn follow_output(&self, _container: &str) -> Result<OutputStream, EngineError> {
        Err(Self::unsupported("follow a container's own output"))
    }

    async fn wait(&self, container: &str) -> Result<i64, EngineError> {
        loop {
            match self.state(container).await? {
                Some(state) if state.status == "running" || state.status == "created" => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return Ok(0),
            }
        }
    }

    async fn export(&self, _container: &str) -> Result<ByteStream, EngineError> {
        Err(Self::unsupported("export containers"))
    }

    async fn stop(&self, container: &str, timeout_secs: i64) -> Result<(), EngineError> {
        if matches!(self.state(container).await?, Some(s) if s.status == "running") {
            let _ = self.runc("stop the container", &["kill", container, "TERM"]).await;
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(timeout_secs.max(0).unsigned_abs());
            while tokio::time::Instant::now() < deadline {
                if !matches!(self.state(container).await?, Some(s) if s.status == "running") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.teardown(container, false).await
    }

    async fn remove_container(&self, container: &str) -> Result<(), EngineError> {
        self.teardown(container, true).await
    }

    async fn ensure_volume(
        &self,
        _name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        Err(Self::unsupported("make volumes"))
    }

    async fn volumes(&self, _label: &str) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    async fn remove_volume(&self, _name: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn containers(&self, label: &str) -> Result<Vec<ContainerInfo>, EngineError> {
        let states = self.states().await?;
        Ok(self
            .records()
            .into_iter()
            .filter(|r| matches(&r.labels, label))
            .map(|r| {
                let running = states.iter().any(|s| s.id == r.name && s.status == "running");
                ContainerInfo {
                    id: r.name.clone(),
                    name: r.name.clone(),
                    image: r.lower.display().to_string(),
                    running,
                    labels: r.labels,
                }
            })
            .collect())
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<(String, OutputStream), EngineError> {
        let mut command = self.command();
        command.arg("exec");
        if let Some(user) = &spec.user {
            command.args(["--user", &spec::exec_user(user)?]);
        }
        if let Some(cwd) = &spec.working_dir {
            command.args(["--cwd", cwd]);
        }
        for env in &spec.env {
            command.args(["--env", env]);
        }
        command.arg(container).args(&spec.cmd);
        command
            .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let mut child =
            command.spawn().map_err(|e| failed("run a command", format!("cannot run runc: {e}")))?;
        if let (Some(secret), Some(mut stdin)) = (&spec.stdin, child.stdin.take()) {
            stdin.write_all(secret.expose().as_bytes()).await.map_err(|e| failed("run a command", e))?;
            drop(stdin);
        }
        let id = format!("runc-exec-{}", rand::random::<u64>());
        self.execs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), None);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(failed("run a command", "its output pipes are missing"));
        };
        let output = futures::stream::select(pieces(stdout, Output::Stdout), pieces(stderr, Output::Stderr));
        // When both pipes end, the exit code is recorded before the stream says it ended.
        let execs = self.execs.clone();
        let key = id.clone();
        let ending = futures::stream::once(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).map_or(-1, i64::from);
            execs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, Some(code));
            None
        })
        .filter_map(|x: Option<Result<Output, EngineError>>| async move { x });
        Ok((id, Box::pin(output.chain(ending))))
    }

    async fn exec_detached(&self, container: &str, spec: &ExecSpec) -> Result<String, EngineError> {
        let mut args = vec!["exec".to_owned(), "--detach".to_owned()];
        if let Some(user) = &spec.user {
            args.extend(["--user".to_owned(), spec::exec_user(user)?]);
        }
        if let Some(cwd) = &spec.working_dir {
            args.extend(["--cwd".to_owned(), cwd.clone()]);
        }
        args.push(container.to_owned());
        args.extend(spec.cmd.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.runc("run a command", &args).await?;
        Ok(format!("runc-detached-{}", rand::random::<u64>()))
    }

    async fn exec_exit_code(&self, exec: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.execs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(exec).copied().flatten())
    }

    async fn listening_ports(&self, container: &str) -> Result<Option<Vec<u16>>, EngineError> {
        Ok(self.state(container).await?.filter(|s| s.pid > 0).map(|s| net::listening_ports(s.pid)))
    }
}
