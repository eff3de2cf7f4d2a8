//! A container engine double (feature `testing`): it records every call, keeps the images and
//! containers it was asked to make, and plays back scripted results, so the workflows can be
//! tested in-process without Docker: a hit touches no engine, a miss builds and installs, a
//! failed install reports its code, cleanup leaves nothing behind.
//!
//! By default every step succeeds: builds print one line and make an image, containers exit 0,
//! execs exit 0 with no output, exports give an empty root file system. A [`Script`] changes
//! that, step by step. Images and containers are named `fake-image-N` and `fake-container-N`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::engine::{
    BuildEvent, BuildRequest, BuildStream, ByteStream, ContainerEngine, ContainerInfo, ContainerSpec,
    EngineError, ExecSpec, ImageConfig, ImageInfo, Output, OutputStream,
};

/// One call the engine received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Image(String),
    Pull(String),
    Build {
        tag: String,
        dockerfile: String,
        build_args: BTreeMap<String, String>,
        secrets: Vec<String>,
    },
    Import {
        tag: String,
    },
    RemoveImage(String),
    Commit {
        container: String,
        tag: String,
        env: Vec<String>,
    },
    CreateContainer {
        image: String,
        cmd: Vec<String>,
        user: Option<String>,
        env: Vec<String>,
        volumes: Vec<(String, String)>,
        tmpfs: Vec<String>,
    },
    Upload {
        container: String,
        path: String,
        bytes: usize,
    },
    Download {
        container: String,
        path: String,
    },
    Start(String),
    FollowOutput(String),
    Wait(String),
    Export(String),
    Stop(String),
    RemoveContainer(String),
    Containers(String),
    EnsureVolume(String),
    RemoveVolume(String),
    Exec {
        container: String,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: Option<String>,
    },
    ExecExitCode(String),
}

/// What a run (a container's main process, or an exec) does.
#[derive(Debug, Clone)]
pub struct Run {
    pub output: Vec<u8>,
    pub exit_code: i64,
    /// Never ends (a long install, a server), until the caller gives up or is cancelled.
    pub hang: bool,
}

impl Run {
    pub fn exits(exit_code: i64, output: &str) -> Self {
        Self { output: output.as_bytes().to_vec(), exit_code, hang: false }
    }

    pub fn hangs() -> Self {
        Self { output: Vec::new(), exit_code: 0, hang: true }
    }
}

/// The results the engine plays back.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Output lines of each build, then `Ok` (an image is made) or `Err` (the build fails with
    /// this message). Builds past the queue succeed.
    pub builds: VecDeque<(Vec<String>, Result<(), String>)>,
    /// What each started container's main process does, in order; past the queue: exit 0.
    pub runs: VecDeque<Run>,
    /// What each exec does, in order; past the queue: exit 0, no output.
    pub execs: VecDeque<Run>,
    /// The root file system tar each export returns, in order; past the queue: the last one,
    /// or an empty archive.
    pub exports: VecDeque<Bytes>,
    /// Files `download` finds in every container (`/etc/passwd`...), as their contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Images a pull finds (by reference); every other pull fails as with no registry.
    pub pullable: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Container {
    info: ContainerInfo,
    started: bool,
}

#[derive(Debug, Default)]
struct State {
    script: Script,
    calls: Vec<Call>,
    /// Image id → image.
    images: BTreeMap<String, ImageInfo>,
    /// Tag → image id.
    tags: BTreeMap<String, String>,
    containers: BTreeMap<String, Container>,
    /// Exec id → its exit code.
    execs: BTreeMap<String, i64>,
    /// What each container's main process does, assigned at start.
    runs: BTreeMap<String, Run>,
    last_export: Option<Bytes>,
    /// Volume name → its labels.
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    next: u64,
}

impl State {
    fn id(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("fake-{kind}-{}", self.next)
    }

    fn resolve_image(&self, reference: &str) -> Option<String> {
        if self.images.contains_key(reference) {
            return Some(reference.to_owned());
        }
        self.tags.get(reference).cloned()
    }
}

/// The engine double. Cheap to clone: clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

impl FakeEngine {
    pub fn new(script: Script) -> Self {
        let engine = Self::default();
        engine.with(|s| s.script = script);
        engine
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn record(&self, call: Call) {
        self.with(|s| s.calls.push(call));
    }

    /// Adds an image under `tag` (a base image the engine "has"); returns its id.
    pub fn add_image(&self, tag: &str, config: ImageConfig, labels: BTreeMap<String, String>) -> String {
        self.with(|s| {
            let id = s.id("image");
            s.images.insert(id.clone(), ImageInfo { id: id.clone(), config, labels, layers: 1 });
            s.tags.insert(tag.to_owned(), id.clone());
            id
        })
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// The ids of the images the engine holds.
    pub fn images(&self) -> Vec<String> {
        self.with(|s| s.images.keys().cloned().collect())
    }

    /// The ids of the containers the engine holds, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.with(|s| s.containers.keys().cloned().collect())
    }
}

fn not_found(what: &'static str, name: &str) -> EngineError {
    EngineError::NotFound { what, name: name.to_owned() }
}

/// A stream of `run`'s output that ends when it exits, or never.
fn run_output(run: &Run) -> OutputStream {
    let output = futures::stream::iter(
        (!run.output.is_empty()).then(|| Ok(Output::Stdout(Bytes::from(run.output.clone())))),
    );
    if run.hang { Box::pin(output.chain(futures::stream::pending())) } else { Box::pin(output) }
}

/// A tar of one file, as the engine's archive endpoint returns it.
fn single_file_tar(path: &str, contents: &[u8]) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    let name = path.rsplit('/').next().unwrap_or(path);
    // Appending to a Vec fails only for a name tar cannot encode; the tests name plain files.
    let _ = builder.append_data(&mut header, name, contents);
    Bytes::from(builder.into_inner().unwrap_or_default())
}

/// An empty tar archive: the end-of-archive blocks alone.
pub fn empty_tar() -> Bytes {
    Bytes::from_static(&[0u8; 1024])
}

#[async_trait]
impl ContainerEngine for FakeEngine {
    fn endpoint(&self) -> String {
        "fake engine".to_owned()
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        self.record(Call::Image(reference.to_owned()));
        Ok(self.with(|s| s.resolve_image(reference).and_then(|id| s.images.get(&id).cloned())))
    }

    async fn pull(&self, reference: &str) -> Result<ImageInfo, EngineError> {
        self.record(Call::Pull(reference.to_owned()));
        let pullable = self.with(|s| s.script.pullable.contains(reference));
        if !pullable {
            return Err(EngineError::Rejected {
                operation: format!("pull the image `{reference}`"),
                message: "no registry answers (the fake engine has no network)".into(),
            });
        }
        self.add_image(reference, ImageConfig::default(), BTreeMap::new());
        self.image(reference).await?.ok_or_else(|| not_found("image", reference))
    }

    async fn build(&self, request: BuildRequest) -> Result<BuildStream, EngineError> {
        self.record(Call::Build {
            tag: request.tag.clone(),
            dockerfile: request.dockerfile.clone(),
            build_args: request.build_args.clone(),
            secrets: request.secrets.keys().cloned().collect(),
        });
        // The context is read to its end, as the engine would.
        let mut context = request.context;
        while let Some(piece) = context.next().await {
            piece?;
        }
        let (lines, result) = self
            .with(|s| s.script.builds.pop_front())
            .unwrap_or_else(|| (vec!["Step 1/1 : FROM scratch\n".into()], Ok(())));
        let mut events: Vec<Result<BuildEvent, EngineError>> =
            lines.into_iter().map(|l| Ok(BuildEvent::Output(l))).collect();
        match result {
            Ok(()) => {
                let id = self.with(|s| {
                    let id = s.id("image");
                    s.images.insert(
                        id.clone(),
                        ImageInfo {
                            id: id.clone(),
                            config: ImageConfig::default(),
                            labels: request.labels,
                            layers: 2,
                        },
                    );
                    s.tags.insert(request.tag, id.clone());
                    id
                });
                events.push(Ok(BuildEvent::Built(id)));
            }
            Err(message) => {
                events.push(Err(EngineError::Rejected { operation: "build the image".into(), message }));
            }
        }
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn import(
        &self,
        mut rootfs: ByteStream,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        self.record(Call::Import { tag: repo_tag.to_owned() });
        while let Some(piece) = rootfs.next().await {
            piece?;
        }
        Ok(self.with(|s| {
            let id = s.id("image");
            s.images.insert(
                id.clone(),
                ImageInfo { id: id.clone(), config: config.clone(), labels: labels.clone(), layers: 1 },
            );
            s.tags.insert(repo_tag.to_owned(), id.clone());
            id
        }))
    }

    async fn commit(
        &self,
        container: &str,
        repo_tag: &str,
        config: &ImageConfig,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        self.record(Call::Commit {
            container: container.to_owned(),
            tag: repo_tag.to_owned(),
            env: config.env.clone(),
        });
        self.with(|s| {
            let base_layers = s
                .containers
                .get(container)
                .and_then(|c| s.resolve_image(&c.info.image))
                .and_then(|id| s.images.get(&id))
                .map_or(1, |i| i.layers);
            let id = s.id("image");
            s.images.insert(
                id.clone(),
                ImageInfo {
                    id: id.clone(),
                    config: config.clone(),
                    labels: labels.clone(),
                    layers: base_layers + 1,
                },
            );
            s.tags.insert(repo_tag.to_owned(), id.clone());
            Ok(id)
        })
    }

    async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveImage(id.to_owned()));
        self.with(|s| {
            if let Some(id) = s.resolve_image(id) {
                s.images.remove(&id);
                s.tags.retain(|_, v| *v != id);
            }
        });
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        self.record(Call::CreateContainer {
            image: spec.image.clone(),
            cmd: spec.cmd.clone(),
            user: spec.user.clone(),
            env: spec.env.clone(),
            volumes: spec.volumes.clone(),
            tmpfs: spec.tmpfs.iter().map(|(path, _)| path.clone()).collect(),
        });
        self.with(|s| {
            if s.resolve_image(&spec.image).is_none() {
                return Err(not_found("image", &spec.image));
            }
            let id = s.id("container");
            let info = ContainerInfo {
                id: id.clone(),
                name: spec.name.clone().unwrap_or_else(|| id.clone()),
                image: spec.image.clone(),
                running: false,
                labels: spec.labels.clone(),
            };
            s.containers.insert(id.clone(), Container { info, started: false });
            Ok(id)
        })
    }

    async fn upload(&self, container: &str, path: &str, mut tar: ByteStream) -> Result<(), EngineError> {
        let mut bytes = 0;
        while let Some(piece) = tar.next().await {
            bytes += piece?.len();
        }
        self.record(Call::Upload { container: container.to_owned(), path: path.to_owned(), bytes });
        Ok(())
    }

    async fn download(&self, container: &str, path: &str) -> Result<Option<Bytes>, EngineError> {
        self.record(Call::Download { container: container.to_owned(), path: path.to_owned() });
        Ok(self.with(|s| s.script.files.get(path).map(|contents| single_file_tar(path, contents))))
    }

    async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.record(Call::Start(container.to_owned()));
        self.with(|s| {
            let run = s.script.runs.pop_front().unwrap_or_else(|| Run::exits(0, ""));
            let c = s.containers.get_mut(container).ok_or_else(|| not_found("container", container))?;
            c.started = true;
            c.info.running = run.hang;
            s.runs.insert(container.to_owned(), run);
            Ok(())
        })
    }

    async fn follow_output(&self, container: &str) -> Result<OutputStream, EngineError> {
        self.record(Call::FollowOutput(container.to_owned()));
        let run =
            self.with(|s| s.runs.get(container).cloned()).ok_or_else(|| not_found("container", container))?;
        Ok(run_output(&run))
    }

    async fn wait(&self, container: &str) -> Result<i64, EngineError> {
        self.record(Call::Wait(container.to_owned()));
        let run =
            self.with(|s| s.runs.get(container).cloned()).ok_or_else(|| not_found("container", container))?;
        if run.hang {
            futures::future::pending::<()>().await;
        }
        Ok(run.exit_code)
    }

    async fn export(&self, container: &str) -> Result<ByteStream, EngineError> {
        self.record(Call::Export(container.to_owned()));
        let tar = self.with(|s| {
            if !s.containers.contains_key(container) {
                return Err(not_found("container", container));
            }
            let tar =
                s.script.exports.pop_front().or_else(|| s.last_export.clone()).unwrap_or_else(empty_tar);
            s.last_export = Some(tar.clone());
            Ok(tar)
        })?;
        // In pieces, as the engine streams it.
        let pieces: Vec<Result<Bytes, EngineError>> =
            tar.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Ok(Box::pin(futures::stream::iter(pieces)))
    }

    async fn stop(&self, container: &str, _timeout_secs: i64) -> Result<(), EngineError> {
        self.record(Call::Stop(container.to_owned()));
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(container) {
                c.info.running = false;
            }
        });
        Ok(())
    }

    async fn remove_container(&self, container: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveContainer(container.to_owned()));
        self.with(|s| {
            s.containers.remove(container);
            s.containers.retain(|_, c| c.info.name != container);
        });
        Ok(())
    }

    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
        self.record(Call::EnsureVolume(name.to_owned()));
        self.with(|s| {
            s.volumes.entry(name.to_owned()).or_insert_with(|| labels.clone());
        });
        Ok(())
    }

    async fn volumes(&self, label: &str) -> Result<Vec<String>, EngineError> {
        let (key, value) = label.split_once('=').map_or((label, None), |(k, v)| (k, Some(v)));
        Ok(self.with(|s| {
            s.volumes
                .iter()
                .filter(|(_, labels)| labels.get(key).is_some_and(|v| value.is_none_or(|want| v == want)))
                .map(|(name, _)| name.clone())
                .collect()
        }))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveVolume(name.to_owned()));
        self.with(|s| s.volumes.remove(name));
        Ok(())
    }

    async fn containers(&self, label: &str) -> Result<Vec<ContainerInfo>, EngineError> {
        self.record(Call::Containers(label.to_owned()));
        let (key, value) = match label.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (label, None),
        };
        Ok(self.with(|s| {
            s.containers
                .values()
                .filter(|c| c.info.labels.get(key).is_some_and(|v| value.is_none_or(|want| v == want)))
                .map(|c| c.info.clone())
                .collect()
        }))
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<(String, OutputStream), EngineError> {
        self.record(Call::Exec {
            container: container.to_owned(),
            cmd: spec.cmd.clone(),
            env: spec.env.clone(),
            // What the double was given, for tests to check where secrets went.
            stdin: spec.stdin.as_ref().map(|s| s.expose().to_owned()),
        });
        let (id, run) = self.with(|s| {
            if !s.containers.get(container).is_some_and(|c| c.started) {
                return Err(not_found("running container", container));
            }
            // A writer of secrets (an exec fed its input) succeeds without a script.
            let run = if spec.stdin.is_some() {
                Run::exits(0, "")
            } else {
                s.script.execs.pop_front().unwrap_or_else(|| Run::exits(0, ""))
            };
            let id = s.id("exec");
            s.execs.insert(id.clone(), run.exit_code);
            Ok((id, run))
        })?;
        Ok((id, run_output(&run)))
    }

    async fn exec_detached(&self, container: &str, spec: &ExecSpec) -> Result<String, EngineError> {
        Ok(self.exec(container, spec).await?.0)
    }

    async fn exec_exit_code(&self, exec: &str) -> Result<Option<i64>, EngineError> {
        self.record(Call::ExecExitCode(exec.to_owned()));
        Ok(self.with(|s| s.execs.get(exec).copied()))
    }
}
