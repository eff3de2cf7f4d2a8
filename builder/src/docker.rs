//! The Docker Engine, through bollard: the only file that imports it.
//!
//! The engine is found through `DOCKER_HOST`, else the default socket; the API version is
//! negotiated once (Debian's engine speaks 1.41, bollard defaults to a newer one). Builds use
//! the classic builder (`/build` with version 1), which needs no BuildKit. bollard reports a
//! failed build as an `Ok` item carrying an error, and a non-zero container exit as an `Err`;
//! both are mapped here so callers see one model.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use bollard_stubs::models::BuildInfoAux;

use crate::buildkit;
use crate::engine::{
    BuildEvent, BuildRequest, BuildStream, ByteStream, Cause, ChangeKind, ContainerEngine, ContainerInfo,
    ContainerSpec, EngineError, ExecSpec, FileChange, ImageConfig, ImageInfo, Output, OutputStream,
};

#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
}

fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

impl DockerEngine {
    /// A BuildKit session for `request`, or why there is none.
    async fn buildkit_session(
        &self,
        secrets: &BTreeMap<String, envbuild_schema::SecretString>,
    ) -> Result<buildkit::Session, String> {
        if std::env::var_os("ENVBUILD_BUILDKIT").is_some_and(|v| v == "0") {
            return Err("ENVBUILD_BUILDKIT=0".into());
        }
        let Some(socket) = self.endpoint.strip_prefix("unix://") else {
            return Err(format!(
                "sessions are opened over a unix socket, and the engine is at {}",
                self.endpoint
            ));
        };
        buildkit::open(std::path::Path::new(socket), secrets).await.map_err(|e| crate::error::chain(&e))
    }

    /// Connects and negotiates the API version; an engine that does not answer is an error
    /// with a hint.
    pub async fn connect() -> Result<Self, EngineError> {
        let endpoint = endpoint();
        let unreachable = |source: Cause| {
            EngineError::Unreachable {
            endpoint: endpoint.clone(),
            hint: "start the engine (`dockerd`, or `bash scripts/test` here, which starts it), or point DOCKER_HOST at one"
                .to_owned(),
            source,
        }
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(Box::new(e)))?;
        let docker = tokio::time::timeout(std::time::Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(Box::new(e)))?;
        Ok(Self { docker, endpoint })
    }

    fn failed(operation: impl Into<String>) -> impl FnOnce(BollardError) -> EngineError {
        let operation = operation.into();
        move |e| failure(operation, e)
    }
}

/// An engine error with bollard's as its source; an error answer keeps the engine's own
/// message, without bollard's wrapping.
fn failure(operation: impl Into<String>, e: BollardError) -> EngineError {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => EngineError::Rejected {
            operation: operation.into(),
            message: format!("{message} (HTTP {status_code})"),
        },
        // A failure the engine reported in a stream (a build step that failed).
        BollardError::DockerStreamError { error } => {
            EngineError::Rejected { operation: operation.into(), message: error }
        }
        other => EngineError::Failed { operation: operation.into(), source: Box::new(other) },
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

fn output(item: LogOutput) -> Option<Output> {
    match item {
        LogOutput::StdOut { message } | LogOutput::Console { message } => Some(Output::Stdout(message)),
        LogOutput::StdErr { message } => Some(Output::Stderr(message)),
        LogOutput::StdIn { .. } => None,
    }
}

fn labels_map(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `repo:tag` split at the tag's colon (not a registry port's); no tag means `latest`.
fn split_repo_tag(repo_tag: &str) -> (&str, &str) {
    repo_tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((repo_tag, "latest"))
}

/// `docker import --change` instructions that restore `config`.
fn changes(config: &ImageConfig, labels: &BTreeMap<String, String>) -> Vec<String> {
    // A list of strings always serializes; `Value`'s Display cannot fail.
    let json = |v: &[String]| serde_json::Value::from(v.to_vec()).to_string();
    let mut out = Vec::new();
    for env in &config.env {
        if let Some((name, value)) = env.split_once('=') {
            out.push(format!("ENV {name}={}", serde_json::Value::String(value.to_owned())));
        }
    }
    if let Some(dir) = &config.working_dir {
        out.push(format!("WORKDIR {dir}"));
    }
    if let Some(user) = &config.user {
        out.push(format!("USER {user}"));
    }
    if let Some(entrypoint) = &config.entrypoint {
        out.push(format!("ENTRYPOINT {}", json(entrypoint)));
    }
    if let Some(cmd) = &config.cmd {
        out.push(format!("CMD {}", json(cmd)));
    }
    for port in &config.exposed_ports {
        out.push(format!("EXPOSE {port}"));
    }
    for (key, value) in labels {
        out.push(format!(
            "LABEL {}={}",
            serde_json::Value::String(key.clone()),
            serde_json::Value::String(value.clone())
        ));
    }
    out
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => {
                let config = image.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    layers: image.root_fs.and_then(|r| r.layers).map_or(0, |l| l.len()),
                    id: image.id.unwrap_or_default(),
                    labels: config.labels.clone().unwrap_or_default().into_iter().collect(),
                    config: ImageConfig {
                        env: config.env.unwrap_or_default(),
                        working_dir: config.working_dir.filter(|d| !d.is_empty()),
                        user: config.user.filter(|u| !u.is_empty()),
                        entrypoint: config.entrypoint,
                        cmd: config.cmd,
                        exposed_ports: config.exposed_ports.unwrap_or_default(),
                    },
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Self::failed(format!("inspect the image `{reference}`"))(e)),
        }
    }

    async fn pull(&self, reference: &str) -> Result<ImageInfo, EngineError> {
        let operation = format!("pull the image `{reference}`");
        let options = CreateImageOptionsBuilder::default().from_image(reference).build();
        let mut events = self.docker.create_image(Some(options), None, None);
        while let Some(event) = events.next().await {
            let event = event.map_err(Self::failed(operation.clone()))?;
            if let Some(message) = event.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Rejected { operation, message });
            }
        }
        self.image(reference)
            .await?
            .ok_or(EngineError::NotFound { what: "pulled image", name: reference.to_owned() })
    }

    async fn build(&self, request: BuildRequest) -> Result<BuildStream, EngineError> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(&request.dockerfile)
            .t(&request.tag)
            .rm(true)
            .forcerm(true)
            .nocache(request.no_cache)
            .networkmode(request.network.docker_mode())
            .labels(&labels_map(&request.labels))
            .buildargs(&labels_map(&request.build_args));
        // BuildKit, as Docker uses by default since 23.0, through a session of our own (it
        // serves the build secrets); the classic builder when the engine cannot open one.
        let (options, session, note) = match self.buildkit_session(&request.secrets).await {
            Ok(session) => {
                let options = options.version(BuilderVersion::BuilderBuildKit).session(&session.id);
                (options, Some(session), None)
            }
            Err(why) => {
                let mut note = format!(
                    "BuildKit is not available ({why}); building with the classic builder, which has no `RUN --mount` (cache and secret mounts)"
                );
                if !request.secrets.is_empty() {
                    note.push_str(" and cannot give the build its secrets");
                }
                (options.version(BuilderVersion::BuilderV1), None, Some(note))
            }
        };
        Ok(async_stream_build(self.docker.clone(), options.build(), request.context, session, note))
    }

    async fn import(
        &self,
        rootfs: ByteStream,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let (repo, tag) = split_repo_tag(repo_tag);
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes(config, labels))
            .build();
        let body = bollard::body_try_stream(rootfs.map_err(std::io::Error::other));
        let mut events = self.docker.create_image(Some(options), Some(body), None);
        while let Some(event) = events.next().await {
            let event = event.map_err(Self::failed(format!("import the image `{repo_tag}`")))?;
            if let Some(detail) = event.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Rejected {
                    operation: format!("import the image `{repo_tag}`"),
                    message: detail,
                });
            }
        }
        let image = self.image(repo_tag).await?;
        image
            .map(|i| i.id)
            .ok_or_else(|| EngineError::NotFound { what: "imported image", name: repo_tag.to_owned() })
    }

    async fn commit(
        &self,
        container: &str,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let (repo, tag) = split_repo_tag(repo_tag);
        let options = bollard::query_parameters::CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .pause(true)
            .build();
        // Every field given, so the engine merges nothing of the container's own config in
        // (its environment may have held what an image must not).
        let body = bollard::models::ContainerConfig {
            env: Some(config.env.clone()),
            working_dir: Some(config.working_dir.clone().unwrap_or_default()),
            user: Some(config.user.clone().unwrap_or_default()),
            entrypoint: Some(config.entrypoint.clone().unwrap_or_default()),
            cmd: Some(config.cmd.clone().unwrap_or_default()),
            exposed_ports: Some(config.exposed_ports.clone()),
            labels: Some(labels_map(labels)),
            ..bollard::models::ContainerConfig::default()
        };
        let committed = self
            .docker
            .commit_container(options, body)
            .await
            .map_err(Self::failed(format!("commit the container as `{repo_tag}`")))?;
        Ok(committed.id)
    }

    async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Self::failed(format!("remove the image `{id}`"))(e)),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let mut options = CreateContainerOptionsBuilder::default();
        if let Some(name) = &spec.name {
            options = options.name(name);
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            env: Some(spec.env.clone()),
            labels: Some(labels_map(&spec.labels)),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.docker_mode().to_owned()),
                binds: (!spec.volumes.is_empty())
                    .then(|| spec.volumes.iter().map(|(volume, path)| format!("{volume}:{path}")).collect()),
                tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.iter().cloned().collect()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(Self::failed(format!("create a container from `{}`", spec.image)))?;
        Ok(created.id)
    }

    async fn upload(&self, container: &str, path: &str, tar: ByteStream) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::default().path(path).build();
        let body = bollard::body_try_stream(tar.map_err(std::io::Error::other));
        self.docker
            .upload_to_container(container, Some(options), body)
            .await
            .map_err(Self::failed(format!("copy files into `{path}` of the container")))
    }

    async fn download(&self, container: &str, path: &str) -> Result<Option<Bytes>, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(container, Some(options));
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(Self::failed(format!("read `{path}` from the container"))(e)),
            }
        }
        Ok(Some(Bytes::from(out)))
    }

    async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.docker.start_container(container, None).await.map_err(Self::failed("start the container"))
    }

    async fn follow_output(&self, container: &str) -> Result<OutputStream, EngineError> {
        let options = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build();
        let stream = self.docker.logs(container, Some(options)).filter_map(|item| async move {
            match item {
                Ok(out) => output(out).map(Ok),
                Err(e) => Some(Err(failure("read the container's output", e))),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn wait(&self, container: &str) -> Result<i64, EngineError> {
        let mut stream = self.docker.wait_container(container, None);
        match stream.next().await {
            Some(Ok(status)) => Ok(status.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(Self::failed("wait for the container")(e)),
            None => Err(EngineError::Rejected {
                operation: "wait for the container".into(),
                message: "the engine ended the wait without an answer".into(),
            }),
        }
    }

    async fn export(&self, container: &str) -> Result<ByteStream, EngineError> {
        let stream = self.docker.export_container(container).map_err(|e| failure("export the container", e));
        Ok(Box::pin(stream))
    }

    async fn changes(&self, container: &str) -> Result<Option<Vec<FileChange>>, EngineError> {
        use bollard_stubs::models::ChangeType;
        // The container's own layer, read on this host when it can be (see `overlay`).
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(Self::failed("inspect the container"))?;
        if let Some(driver) = inspect.graph_driver.filter(|d| d.name == "overlay2")
            && let (Some(upper), Some(lower)) = (driver.data.get("UpperDir"), driver.data.get("LowerDir"))
        {
            let upper = std::path::PathBuf::from(upper);
            let lowers: Vec<std::path::PathBuf> = lower.split(':').map(std::path::PathBuf::from).collect();
            let read = tokio::task::spawn_blocking(move || crate::overlay::changes(&upper, &lowers)).await;
            if let Ok(Some(changes)) = read {
                return Ok(Some(changes));
            }
        }
        let changes = self
            .docker
            .container_changes(container)
            .await
            .map_err(Self::failed("list the paths the container changed"))?
            .unwrap_or_default();
        Ok(Some(
            changes
                .into_iter()
                .map(|c| FileChange {
                    path: c.path,
                    kind: match c.kind {
                        ChangeType::_0 => ChangeKind::Modified,
                        ChangeType::_1 => ChangeKind::Added,
                        ChangeType::_2 => ChangeKind::Deleted,
                    },
                })
                .collect(),
        ))
    }

    async fn archive(&self, container: &str, path: &str) -> Result<Option<ByteStream>, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(container, Some(options));
        // A missing path is the first item's error; anything later is a failed read.
        let first = match stream.next().await {
            None => Bytes::new(),
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) if is_not_found(&e) => return Ok(None),
            Some(Err(e)) => return Err(Self::failed(format!("read `{path}` from the container"))(e)),
        };
        let what = format!("read `{path}` from the container");
        let rest = stream.map_err(move |e| failure(what.clone(), e));
        Ok(Some(Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest))))
    }

    async fn stop(&self, container: &str, timeout_secs: i64) -> Result<(), EngineError> {
        let options =
            StopContainerOptionsBuilder::default().t(i32::try_from(timeout_secs).unwrap_or(10)).build();
        match self.docker.stop_container(container, Some(options)).await {
            // Already stopped (304) or gone (404): the goal is reached.
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(Self::failed("stop the container")(e)),
        }
    }

    async fn remove_container(&self, container: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(container, Some(options)).await {
            // Gone (404), or already being removed by an earlier request (409).
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404 | 409, .. }) => Ok(()),
            Err(e) => Err(Self::failed(format!("remove the container `{container}`"))(e)),
        }
    }

    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
        let options = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels_map(labels)),
            ..bollard::models::VolumeCreateRequest::default()
        };
        self.docker
            .create_volume(options)
            .await
            .map_err(Self::failed(format!("create the volume `{name}`")))?;
        Ok(())
    }

    async fn volumes(&self, label: &str) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options =
            bollard::query_parameters::ListVolumesOptionsBuilder::default().filters(&filters).build();
        let list = self.docker.list_volumes(Some(options)).await.map_err(Self::failed("list volumes"))?;
        Ok(list.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(Self::failed(format!("remove the volume `{name}`"))(e)),
        }
    }

    async fn labelled_images(
        &self,
        label: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListImagesOptionsBuilder::default().filters(&filters).build();
        let list = self.docker.list_images(Some(options)).await.map_err(Self::failed("list images"))?;
        Ok(list.into_iter().map(|image| (image.id, image.labels.into_iter().collect())).collect())
    }

    async fn containers(&self, label: &str) -> Result<Vec<ContainerInfo>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list =
            self.docker.list_containers(Some(options)).await.map_err(Self::failed("list containers"))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                image: c.image.unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<(String, OutputStream), EngineError> {
        let config = ExecConfig {
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            env: Some(spec.env.clone()),
            attach_stdin: Some(spec.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..ExecConfig::default()
        };
        let created =
            self.docker.create_exec(container, config).await.map_err(Self::failed("create an exec"))?;
        let started =
            self.docker.start_exec(&created.id, None).await.map_err(Self::failed("start an exec"))?;
        let bollard::exec::StartExecResults::Attached { output: stream, mut input } = started else {
            return Err(EngineError::Rejected {
                operation: "start an exec".into(),
                message: "it did not attach".into(),
            });
        };
        if let Some(stdin) = &spec.stdin {
            use tokio::io::AsyncWriteExt;
            let written = async {
                input.write_all(stdin.expose().as_bytes()).await?;
                input.shutdown().await
            };
            written.await.map_err(|e| EngineError::Failed {
                operation: "write to an exec".into(),
                source: Box::new(e),
            })?;
        }
        let stream = stream.filter_map(|item| async move {
            match item {
                Ok(out) => output(out).map(Ok),
                Err(e) => Some(Err(failure("read an exec's output", e))),
            }
        });
        Ok((created.id, Box::pin(stream)))
    }

    async fn exec_detached(&self, container: &str, spec: &ExecSpec) -> Result<String, EngineError> {
        let config = ExecConfig {
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            env: Some(spec.env.clone()),
            ..ExecConfig::default()
        };
        let created =
            self.docker.create_exec(container, config).await.map_err(Self::failed("create an exec"))?;
        let options =
            bollard::exec::StartExecOptions { detach: true, ..bollard::exec::StartExecOptions::default() };
        self.docker.start_exec(&created.id, Some(options)).await.map_err(Self::failed("start an exec"))?;
        Ok(created.id)
    }

    async fn exec_exit_code(&self, exec: &str) -> Result<Option<i64>, EngineError> {
        let inspected = self.docker.inspect_exec(exec).await.map_err(Self::failed("inspect an exec"))?;
        Ok(if inspected.running == Some(true) { None } else { inspected.exit_code })
    }
}

/// What a BuildKit build has shown so far, to print each step once.
#[derive(Debug, Default)]
struct Trace {
    /// Vertex digest → its number in the output, for the steps shown.
    steps: HashMap<String, usize>,
    done: std::collections::HashSet<String>,
}

impl Trace {
    /// Lines for a BuildKit status update: each step when it starts (`#3 RUN npm ci`), its
    /// logs, and how it ended (`#3 DONE`, `#3 CACHED`, `#3 ERROR: ...`).
    fn lines(&mut self, status: &bollard_stubs::moby::buildkit::v1::StatusResponse) -> Vec<String> {
        let mut out = Vec::new();
        for vertex in &status.vertexes {
            let next = self.steps.len() + 1;
            let number = *self.steps.entry(vertex.digest.clone()).or_insert_with(|| {
                out.push(format!("#{next} {}\n", vertex.name));
                next
            });
            if (vertex.completed.is_some() || !vertex.error.is_empty())
                && self.done.insert(vertex.digest.clone())
            {
                out.push(if !vertex.error.is_empty() {
                    format!("#{number} ERROR: {}\n", vertex.error)
                } else if vertex.cached {
                    format!("#{number} CACHED\n")
                } else {
                    format!("#{number} DONE\n")
                });
            }
        }
        for log in &status.logs {
            let number = self.steps.get(&log.vertex).copied().unwrap_or(0);
            for line in String::from_utf8_lossy(&log.msg).split_inclusive('\n') {
                out.push(format!("#{number} {line}"));
            }
        }
        out
    }
}

/// The build stream: output lines as they come, then the image id; a failure is an `Err`
/// item. A task owns the engine handle (and the BuildKit session, which must live as long as
/// the build) and feeds a channel, since bollard's stream borrows the handle.
fn async_stream_build(
    docker: Docker,
    options: bollard::query_parameters::BuildImageOptions,
    context: ByteStream,
    session: Option<buildkit::Session>,
    note: Option<String>,
) -> BuildStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<BuildEvent, EngineError>>(64);
    let body = bollard::body_try_stream(context.map_err(std::io::Error::other));
    tokio::spawn(async move {
        let _session = session;
        if let Some(note) = note
            && tx.send(Ok(BuildEvent::Note(note))).await.is_err()
        {
            return;
        }
        let mut trace = Trace::default();
        let mut events = docker.build_image(options, None, Some(body));
        while let Some(item) = events.next().await {
            let mapped: Vec<Result<BuildEvent, EngineError>> = match item {
                Err(e) => vec![Err(failure("build the image", e))],
                Ok(info) => {
                    let mut out = Vec::new();
                    if let Some(line) = info.stream {
                        out.push(Ok(BuildEvent::Output(line)));
                    }
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        out.push(Err(EngineError::Rejected {
                            operation: "build the image".into(),
                            message: detail,
                        }));
                    }
                    match info.aux {
                        Some(BuildInfoAux::BuildKit(status)) => {
                            out.extend(trace.lines(&status).into_iter().map(|l| Ok(BuildEvent::Output(l))));
                        }
                        Some(BuildInfoAux::Default(image)) => {
                            out.extend(image.id.map(|id| Ok(BuildEvent::Built(id))));
                        }
                        None => {}
                    }
                    out
                }
            };
            for event in mapped {
                if tx.send(event).await.is_err() {
                    return; // the reader went away (cancelled)
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}
