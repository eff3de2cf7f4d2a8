//! The workflows in-process, against the engine double (`envbuild_builder::testing`): no
//! binary, no Docker. Each test scripts what the engine does and checks what the workflow
//! asked of it and what it stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envbuild::boot::{BootOptions, Target};
use envbuild::build::{BuildOptions, RepoOptions};
use envbuild::session::Reporter;
use envbuild::{Error, Session};
use envbuild_builder::BuildError;
use envbuild_builder::engine::{LazyEngine, Network};
use envbuild_builder::testing::{Call, FakeEngine, Run, Script};
use envbuild_cache::store::local::LocalStore;
use envbuild_cache::{Store, catalog, restore};
use envbuild_secrets::records::{self, NewVersion};
use envbuild_secrets::{Keyring, Scope, SecretString, When};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::build::repo;

/// Everything the workflow reported, to check nothing secret got through.
#[derive(Debug, Default)]
pub(crate) struct Collected(Mutex<Vec<u8>>);

impl Collected {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Reporter for Collected {
    fn note(&self, text: &str) {
        self.0.lock().unwrap().extend_from_slice(format!("{text}\n").as_bytes());
    }
    fn warn(&self, text: &str) {
        self.note(&format!("warning: {text}"));
    }
    fn output(&self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

pub(crate) struct World {
    _dirs: Vec<tempfile::TempDir>,
    pub(crate) repo: tempfile::TempDir,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keyring: Keyring,
    pub(crate) reporter: Arc<Collected>,
}

impl World {
    /// A repository of its own: `.cursor/environment.json` is `config`, `files` are written
    /// beside it (paths relative to the repository), and it is one git commit.
    pub(crate) fn with_config(config: &str, files: &[(&str, &str)]) -> Self {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join(".cursor")).unwrap();
        std::fs::write(repo.path().join(".cursor/environment.json"), config).unwrap();
        for (path, contents) in files {
            let path = repo.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        crate::build::git(repo.path(), &["init", "-q"]);
        crate::build::commit(repo.path(), "config");
        let mut world = Self::new("basic");
        world.repo = repo;
        world
    }

    pub(crate) fn new(fixture: &str) -> Self {
        let store_dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(store_dir.path()).unwrap());
        Self {
            keyring: Keyring { master_key: keys.path().join("master.key"), kms_key_id: None },
            _dirs: vec![store_dir, keys],
            repo: repo(fixture),
            store,
            reporter: Arc::new(Collected::default()),
        }
    }

    pub(crate) fn session(&self, engine: &FakeEngine, cancel: &CancellationToken) -> Session {
        Session {
            store: self.store.clone(),
            engine: Arc::new(LazyEngine::ready(Arc::new(engine.clone()))),
            keyring: self.keyring.clone(),
            jobs: 2,
            reporter: self.reporter.clone(),
            cancel: cancel.clone(),
        }
    }

    pub(crate) fn options(&self) -> BuildOptions {
        BuildOptions {
            repo: RepoOptions {
                repo: self.repo.path().to_path_buf(),
                network: Network::None,
                ..RepoOptions::default()
            },
            ..BuildOptions::default()
        }
    }

    /// Stores `value` as the secret `name` in `scope`.
    pub(crate) async fn set_secret(&self, scope: &Scope, name: &str, when: When, value: &str) {
        let kek = self.keyring.sealing_key().await.unwrap();
        let meta = envbuild_secrets::envelope::Meta {
            when,
            redact: true,
            affects_build: false,
            created: "now".into(),
        };
        records::set(
            &*self.store,
            &*kek,
            &NewVersion { scope, name, meta },
            &SecretString::new(value.into()),
        )
        .await
        .unwrap();
    }

    pub(crate) async fn snapshots(&self) -> usize {
        catalog::list_snapshots(&*self.store).await.unwrap().len()
    }
}

/// A root file system as `docker export` gives it: canonical order, `extra` files added.
pub(crate) fn rootfs(extra: &[(&str, &str)]) -> Bytes {
    let mut files: BTreeMap<&str, &str> =
        BTreeMap::from([("etc/group", GROUP), ("etc/passwd", PASSWD), ("workspace/built.txt", "built\n")]);
    files.extend(extra.iter().copied());
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs_done = std::collections::BTreeSet::new();
    for (path, contents) in files {
        if let Some((dir, _)) = path.rsplit_once('/')
            && dirs_done.insert(dir.to_owned())
        {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{dir}/"), std::io::empty()).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(contents.len() as u64);
        builder.append_data(&mut header, path, contents.as_bytes()).unwrap();
    }
    Bytes::from(builder.into_inner().unwrap())
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n";
const GROUP: &str = "root:x:0:\nagent:x:1000:\n";

/// The engine double over `script`, its images holding the fixture's users.
pub(crate) fn fake(mut script: Script) -> FakeEngine {
    script.files.insert("/etc/passwd".into(), PASSWD.into());
    script.files.insert("/etc/group".into(), GROUP.into());
    FakeEngine::new(script)
}

fn script_with_export(tar: Bytes) -> Script {
    Script { exports: [tar].into(), ..Script::default() }
}

#[tokio::test]
async fn a_miss_builds_installs_exports_and_stores_and_a_hit_touches_no_engine() {
    let world = World::new("basic");
    let tar = rootfs(&[]);
    let engine = fake(script_with_export(tar.clone()));
    let cancel = CancellationToken::new();
    let report = envbuild::build::build(&world.session(&engine, &cancel), &world.options()).await.unwrap();
    assert!(!report.hit);

    // Build, then the install container: created from the built image, the repository
    // uploaded, install run as `sh -c`, then exported; and removed at the end.
    let calls = engine.calls();
    let position = |wanted: &dyn Fn(&Call) -> bool| calls.iter().position(wanted).unwrap_or(usize::MAX);
    let build = position(&|c| matches!(c, Call::Build { .. }));
    let create = position(&|c| matches!(c, Call::CreateContainer { .. }));
    let upload = position(&|c| matches!(c, Call::Upload { path, bytes, .. } if path == "/" && *bytes > 0));
    let start = position(&|c| matches!(c, Call::Start(_)));
    let install = position(
        &|c| matches!(c, Call::Exec { cmd, .. } if cmd.last().is_some_and(|c| c.contains("install done"))),
    );
    let export = position(&|c| matches!(c, Call::Export(_)));
    let removed = position(&|c| matches!(c, Call::RemoveContainer(_)));
    assert!(
        build < create
            && create < upload
            && upload < start
            && start < install
            && install < export
            && export < removed,
        "{calls:#?}"
    );
    assert!(engine.containers().is_empty(), "the install container was left behind");
    assert_eq!(engine.images().len(), 2, "the system image and the checkpoint are kept, nothing else");

    // Stored: the snapshot is the exported tar, byte for byte, under the env key.
    let id = envbuild::build::stored_snapshot(&*world.store, &report.env_key).await.unwrap().unwrap();
    assert_eq!(id, report.id);
    let manifest = restore::read_manifest(&*world.store, &id).await.unwrap();
    let mut out = Vec::new();
    let mut stream = envbuild::bridge::snapshot_stream(world.store.clone(), &manifest, 2);
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(out, tar.to_vec(), "the snapshot is not the exported stream");

    // The second build is a hit: the engine is not called at all.
    let untouched = FakeEngine::default();
    let again = envbuild::build::build(&world.session(&untouched, &cancel), &world.options()).await.unwrap();
    assert!(again.hit);
    assert_eq!(again.id, report.id);
    assert!(untouched.calls().is_empty(), "a hit called the engine: {:?}", untouched.calls());
}

#[tokio::test]
async fn an_install_failure_reports_its_code_and_last_lines_and_publishes_nothing() {
    let world = World::new("basic");
    let output = (1..=50).map(|i| format!("install line {i}")).collect::<Vec<_>>().join("\n") + "\n";
    let engine = fake(Script { execs: [Run::exits(3, &output)].into(), ..Script::default() });
    let cancel = CancellationToken::new();
    let err = envbuild::build::build(&world.session(&engine, &cancel), &world.options()).await.unwrap_err();
    let Error::Build(BuildError::InstallFailed { code, tail }) = &err else { panic!("{err:?}") };
    assert_eq!(*code, 3);
    assert!(tail.contains("install line 50") && !tail.contains("install line 1\n"), "{tail}");
    assert!(world.reporter.text().contains("install line 1\n"), "the output was not streamed");
    assert_eq!(world.snapshots().await, 0, "a failed install published a snapshot");
    assert!(!engine.calls().iter().any(|c| matches!(c, Call::Export(_))), "a failed install was exported");
    assert!(engine.containers().is_empty(), "the failed install container was left behind");
}

#[tokio::test]
async fn a_failed_image_build_leaves_nothing() {
    let world = World::new("basic");
    let engine = fake(Script {
        builds: [(vec!["Step 1/2 : RUN exit 7\n".to_owned()], Err("exit code 7".to_owned()))].into(),
        ..Script::default()
    });
    let err = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Build(BuildError::BuildFailed { detail }) if detail.contains("exit code 7")),
        "{err:?}"
    );
    assert!(engine.containers().is_empty() && engine.images().is_empty());
    assert_eq!(world.snapshots().await, 0);
}

#[tokio::test]
async fn a_leak_refusal_publishes_nothing_and_reveals_nothing() {
    let world = World::new("basic");
    let value = "npm_s3cr3t-t0ken-value-42";
    world.set_secret(&Scope::workspace(), "NPM_TOKEN", When::Install, value).await;
    let before: usize = world.store.list("v1/chunks/").await.unwrap().len();

    let npmrc = format!("//registry.npmjs.org/:_authToken={value}\n");
    let engine = fake(Script {
        execs: [Run::exits(0, &format!("using token {value}\n"))].into(),
        exports: [rootfs(&[("root/.npmrc", &npmrc)])].into(),
        ..Script::default()
    });
    let err = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap_err();
    let text = envbuild_builder::error::chain(&err);
    assert!(text.contains("NPM_TOKEN") && text.contains("root/.npmrc"), "{text}");
    assert_eq!(world.snapshots().await, 0, "a leaking snapshot was published");
    assert_eq!(world.store.list("v1/chunks/").await.unwrap().len(), before, "the leaking chunks stayed");
    // Install got the value through its secrets file, written from an exec's input: never a
    // container's or an exec's environment. And no sink saw it.
    let calls = engine.calls();
    assert!(calls.iter().any(|c| matches!(c, Call::Exec { stdin: Some(file), .. } if file.contains(&format!("NPM_TOKEN='{value}'")))));
    for call in &calls {
        if let Call::CreateContainer { env, .. } | Call::Exec { env, .. } = call {
            assert!(!env.iter().any(|e| e.contains(value)), "the value is in an environment: {call:?}");
        }
    }
    let reported = world.reporter.text();
    assert!(reported.contains("using token ***") && !reported.contains(value), "{reported}");
    assert!(!text.contains(value));
    assert!(engine.containers().is_empty());
}

#[tokio::test]
async fn cancellation_removes_the_install_container_and_publishes_nothing() {
    let world = World::new("basic");
    let engine = fake(Script { execs: [Run::hangs()].into(), ..Script::default() });
    let cancel = CancellationToken::new();
    let session = world.session(&engine, &cancel);
    let options = world.options();
    let build = tokio::spawn(async move { envbuild::build::build(&session, &options).await });
    // Cancel once install is running.
    let running = |engine: &FakeEngine| engine.calls().iter().any(|c| matches!(c, Call::Exec { .. }));
    for _ in 0..500 {
        if running(&engine) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running(&engine), "install never started");
    assert!(!engine.containers().is_empty());
    cancel.cancel();
    let result = build.await.unwrap();
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert!(engine.containers().is_empty(), "cancellation left the install container behind");
    assert_eq!(world.snapshots().await, 0);
}

#[tokio::test]
async fn boot_runs_install_then_start_then_the_terminals() {
    let world = World::new("basic");
    let cancel = CancellationToken::new();
    let builder = fake(script_with_export(rootfs(&[])));
    let built = envbuild::build::build(&world.session(&builder, &cancel), &world.options()).await.unwrap();

    let engine = fake(Script {
        execs: [Run::exits(0, "install again\n"), Run::exits(0, ""), Run::exits(0, "supervised\n")].into(),
        runs: [Run::hangs()].into(),
        ..Script::default()
    });
    let options = BootOptions {
        target: Target::Snapshot(built.id.to_string()),
        repo: None,
        name: Some("agent-1".into()),
        groups: Vec::new(),
        network: Network::None,
        start_wait: Duration::from_secs(5),
        engine: envbuild::boot::EngineChoice::Docker,
        publish: Vec::new(),
        ready_wait: None,
    };
    let report = envbuild::boot::boot(&world.session(&engine, &cancel), &options).await.unwrap();
    assert_eq!(report.terminals, ["hello"]);
    assert_eq!(
        report.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
        ["image", "container", "install", "start", "terminals"]
    );
    let execs: Vec<Vec<String>> = engine
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Exec { cmd, .. } => Some(cmd),
            _ => None,
        })
        .collect();
    // The secrets file is written before install (install's secrets) and again before start
    // (the boot secrets); the remaining execs are the environment's own steps, in order.
    let (writes, execs): (Vec<_>, Vec<_>) =
        execs.into_iter().partition(|cmd| cmd.iter().any(|a| a.contains("> /run/envbuild/secrets.env")));
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(execs.len(), 3, "{execs:?}");
    assert!(execs[0].last().unwrap().contains("install done"), "install first: {execs:?}");
    assert!(
        execs[1].contains(&"start".to_owned()) && execs[1].contains(&"echo started".to_owned()),
        "{execs:?}"
    );
    assert!(execs[2].contains(&"launch".to_owned()) && execs[2].contains(&"hello".to_owned()), "{execs:?}");
    assert_eq!(engine.containers().len(), 1, "the environment's container is kept");
    envbuild::envs::stop(&world.session(&engine, &cancel), "agent-1").await.unwrap();
    assert!(engine.containers().is_empty());
}
