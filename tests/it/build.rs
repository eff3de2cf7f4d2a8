//! `envbuild build`, `key`, `explain` and `fetch --docker` against the real Docker engine, on
//! the fixture repositories (fixtures/repos/). scripts/test starts dockerd; with
//! `ENVBUILD_TEST_REQUIRE_SERVERS` set, a missing engine fails these tests instead of skipping.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use envbuild_builder::docker::DockerEngine;
use envbuild_builder::engine::ContainerEngine;

/// The engine, or `None` (with a note) when none answers and the run does not require one.
pub async fn engine() -> Option<Arc<dyn ContainerEngine>> {
    match DockerEngine::connect().await {
        Ok(engine) => Some(Arc::new(engine)),
        Err(e) => {
            assert!(
                std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
                "no Docker engine answers ({e}), but this run requires it: run the tests through scripts/test"
            );
            eprintln!("skipping: no Docker engine ({e})");
            None
        }
    }
}

/// A scratch copy of fixture `name` as a git repository, with busybox in its build context.
pub fn repo(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repos").join(name);
    copy_tree(&fixture, dir.path());
    let loaded = envbuild_schema::load(&dir.path().join(".cursor/environment.json"), Some(dir.path()));
    let context = loaded.paths.unwrap().context.expect("the fixture has a build context");
    std::fs::copy("/bin/busybox", context.join("busybox")).expect("busybox-static provides /bin/busybox");
    git(dir.path(), &["init", "-q"]);
    commit(dir.path(), "fixture");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn git(repo: &Path, args: &[&str]) {
    let status = StdCommand::new("git").arg("-C").arg(repo).args(args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

pub fn commit(repo: &Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(
        repo,
        &[
            "-c",
            "user.email=test@envbuild",
            "-c",
            "user.name=test",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ],
    );
}

pub fn envbuild(store: &Path) -> Command {
    let mut cmd = Command::cargo_bin("envbuild").unwrap();
    cmd.env_remove("RUST_LOG").env("ENVBUILD_STORE", store).env_remove("ENVBUILD_REPO");
    cmd
}

pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn build(store: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    json(&envbuild(store).args(["build", "--json", "--repo"]).arg(repo).args(extra).output().unwrap())
}

fn keys(store: &Path, repo: &Path) -> (String, String) {
    let report = json(&envbuild(store).args(["key", "--json", "--repo"]).arg(repo).output().unwrap());
    (report["system_key"].as_str().unwrap().to_owned(), report["env_key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_build_is_a_hit_with_no_engine_calls() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("basic");
    let store = tempfile::tempdir().unwrap();
    let first = build(store.path(), repo.path(), &[]);
    assert_eq!(first["hit"], false);
    // The engine cannot be reached at all: a hit must not need it.
    let out = envbuild(store.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build", "--json", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let second = json(&out);
    assert_eq!(second["hit"], true);
    assert_eq!(second["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_holds_what_install_wrote() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("basic");
    let store = tempfile::tempdir().unwrap();
    let report = build(store.path(), repo.path(), &[]);
    let id = report["id"].as_str().unwrap();
    let root = store.path().join("rootfs");
    envbuild(store.path()).args(["fetch", id, "--to"]).arg(&root).assert().success();
    assert_eq!(std::fs::read_to_string(root.join("workspace/built.txt")).unwrap(), "built\n");
    assert_eq!(
        std::fs::read_to_string(root.join("workspace/whoami.txt")).unwrap(),
        "1000\n",
        "install ran as `agent`"
    );
    assert_eq!(std::fs::read_to_string(root.join("opt/tool/version")).unwrap(), "1.0\n");
    assert_eq!(
        std::fs::read_to_string(root.join("workspace/src/version.txt")).unwrap(),
        "1.0\n",
        "the repository is at /workspace"
    );
    assert_eq!(
        std::fs::metadata(root.join("workspace/README.md")).unwrap().uid(),
        1000,
        "the repository is owned by the user"
    );
    assert!(!root.join("workspace/.git").exists(), "only the files git tracks are copied");
    // The manifest carries the image's OCI configuration, the environment and the key manifest.
    let inspected = json(&envbuild(store.path()).args(["inspect", id, "--json"]).output().unwrap());
    let manifest = &inspected["manifest"];
    assert_eq!(manifest["image_config"]["WorkingDir"], "/workspace");
    assert_eq!(manifest["environment"]["name"], "basic");
    assert_eq!(manifest["keys"]["env_key"], report["env_key"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tracked_file_change_changes_only_the_env_key_and_reuses_the_image() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("basic");
    let store = tempfile::tempdir().unwrap();
    let first = build(store.path(), repo.path(), &[]);
    std::fs::write(repo.path().join("src/version.txt"), "2.0\n").unwrap();
    let second = build(store.path(), repo.path(), &[]);
    assert_eq!(second["system_key"], first["system_key"]);
    assert_ne!(second["env_key"], first["env_key"]);
    assert_eq!(second["hit"], false);
    assert_eq!(second["system_image_reused"], true, "only install must run again");
    assert_eq!(second["system_image"], first["system_image"]);
    // explain names the file, by key and by snapshot id.
    for (a, b) in [(&first["env_key"], &second["env_key"]), (&first["id"], &second["id"])] {
        let out = envbuild(store.path())
            .args(["explain", a.as_str().unwrap(), b.as_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("input file src/version.txt"), "{stdout}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dockerfile_change_changes_both_keys() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("basic");
    let store = tempfile::tempdir().unwrap();
    let before = keys(store.path(), repo.path());
    let dockerfile = repo.path().join(".cursor/Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("RUN echo one more layer\n");
    std::fs::write(&dockerfile, text).unwrap();
    let after = keys(store.path(), repo.path());
    assert_ne!(after.0, before.0);
    assert_ne!(after.1, before.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_excluded_by_dockerignore_change_no_key() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("dockerignore");
    let store = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join(".cursor/build.log"), "first").unwrap();
    std::fs::create_dir_all(repo.path().join(".cursor/scratch")).unwrap();
    std::fs::write(repo.path().join(".cursor/scratch/notes"), "a").unwrap();
    let before = keys(store.path(), repo.path());
    std::fs::write(repo.path().join(".cursor/build.log"), "second, longer").unwrap();
    std::fs::write(repo.path().join(".cursor/scratch/notes"), "b").unwrap();
    assert_eq!(keys(store.path(), repo.path()), before, "ignored files changed a key");
    // A file the context does include changes the system key.
    std::fs::write(repo.path().join(".cursor/assets/asset.txt"), "changed").unwrap();
    assert_ne!(keys(store.path(), repo.path()).0, before.0);
    let report = build(store.path(), repo.path(), &[]);
    let root = store.path().join("rootfs");
    envbuild(store.path())
        .args(["fetch", report["id"].as_str().unwrap(), "--to"])
        .arg(&root)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(root.join("workspace/assets.txt")).unwrap(), "asset.txt\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_of_dot_dot_sends_the_repository() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("context-parent");
    let store = tempfile::tempdir().unwrap();
    let report = build(store.path(), repo.path(), &[]);
    let root = store.path().join("rootfs");
    envbuild(store.path())
        .args(["fetch", report["id"].as_str().unwrap(), "--to"])
        .arg(&root)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(root.join("workspace/seen.conf")).unwrap(),
        "setting=from-the-repository-root\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_install_exits_1_with_its_output() {
    let Some(engine) = engine().await else { return };
    let repo = repo("failing");
    let store = tempfile::tempdir().unwrap();
    let env_key = keys(store.path(), repo.path()).1;
    let out = envbuild(store.path()).args(["build", "--repo"]).arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("install failed with exit code 3"), "{stderr}");
    assert!(
        stderr.contains("| npm ERR! 404 Not Found: left-pad@9.9.9"),
        "the last lines are shown: {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing is printed as a snapshot id");
    assert!(
        std::fs::read_dir(store.path().join("v1/snapshots")).map_or(true, |mut d| d.next().is_none()),
        "nothing was published"
    );
    let left = engine.containers(&format!("envbuild.env-key={env_key}")).await.unwrap();
    assert!(left.is_empty(), "the install container was left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_idempotent_install_is_reported() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("not-idempotent");
    let store = tempfile::tempdir().unwrap();
    let out = envbuild(store.path())
        .args(["build", "--check-idempotent", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "a warning without --strict");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("install is not idempotent") && stderr.contains("~ opt/runs.log (content)"),
        "{stderr}"
    );
    let strict = envbuild(store.path())
        .args(["build", "--no-cache", "--check-idempotent", "--strict", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    // On a hit, when asked: install runs once more on the stored snapshot; `--json` lists the
    // paths.
    let hit = envbuild(store.path())
        .args(["build", "--check-idempotent", "--json", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let report = json(&hit);
    assert_eq!(report["hit"], true);
    assert_eq!(report["idempotency"]["idempotent"], false);
    assert!(
        report["idempotency"]["changed"].as_array().unwrap().iter().any(|p| p == "opt/runs.log (content)"),
        "{report}"
    );
    let basic = self::repo("basic");
    let out = envbuild(store.path())
        .args(["build", "--check-idempotent", "--strict", "--repo"])
        .arg(basic.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("install is idempotent"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_docker_loads_the_snapshot_with_its_config() {
    let Some(engine) = engine().await else { return };
    let repo = repo("basic");
    let store = tempfile::tempdir().unwrap();
    let report = build(store.path(), repo.path(), &[]);
    let id = report["id"].as_str().unwrap();
    let tag = format!("envbuild-test/loaded:{}", &id[7..19]);
    let out = envbuild(store.path()).args(["fetch", id, "--docker", &tag]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = engine.image(&tag).await.unwrap().expect("the image is loaded");
    assert_eq!(image.config.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
    assert!(image.config.env.contains(&"PATH=/bin".to_owned()));
    assert_eq!(image.labels.get("envbuild.snapshot").map(String::as_str), Some(id));
    engine.remove_image(&image.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_removes_the_build_containers() {
    let Some(engine) = engine().await else { return };
    let repo = repo("basic");
    let config = repo.path().join(".cursor/environment.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("echo install done", "sleep 60");
    std::fs::write(&config, text).unwrap();
    commit(repo.path(), "slow install");
    let store = tempfile::tempdir().unwrap();
    let env_key = keys(store.path(), repo.path()).1;
    let label = format!("envbuild.env-key={env_key}");
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("envbuild"))
        .args(["build", "--repo"])
        .arg(repo.path())
        .env("ENVBUILD_STORE", store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut started = false;
    for _ in 0..200 {
        if engine.containers(&label).await.unwrap().iter().any(|c| c.running) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started, "install never started");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(engine.containers(&label).await.unwrap().is_empty(), "Ctrl-C left the install container behind");
}

/// The `basic` fixture whose Dockerfile makes a fresh layer (a unique value defeats the layer
/// cache), then fails with exit code 7.
fn failing_repo() -> tempfile::TempDir {
    let repo = repo("basic");
    let dockerfile = repo.path().join(".cursor/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let unique = format!("{:?}", std::time::SystemTime::now());
    std::fs::write(&dockerfile, format!("{text}RUN echo '{unique}' > /made-by-this-build\nRUN exit 7\n"))
        .unwrap();
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_build_leaves_no_layers_or_containers() {
    let Some(engine) = engine().await else { return };
    let repo = failing_repo();
    let store = tempfile::tempdir().unwrap();
    let keys = envbuild(store.path()).args(["key", "--json", "--repo"]).arg(repo.path()).output().unwrap();
    let system_key = json(&keys)["system_key"].as_str().unwrap().to_owned();
    let out = envbuild(store.path()).args(["build", "--repo"]).arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the build of the Dockerfile failed") && stderr.contains("exit code: 7"),
        "{stderr}"
    );
    // No image under the system key, and no container: BuildKit keeps the steps that ran as
    // build cache (Docker's layer cache), not as images.
    let tag = format!("envbuild-system:{}", system_key.trim_start_matches("sha256:"));
    assert!(engine.image(&tag).await.unwrap().is_none(), "the failed build left an image");
    assert!(engine.containers("envbuild.role=install").await.unwrap().is_empty());
}
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_classic_build_leaves_no_layers_or_containers() {
    let Some(engine) = engine().await else { return };
    let repo = failing_repo();
    let store = tempfile::tempdir().unwrap();
    // The classic builder, as on an engine without BuildKit: it says what that disables.
    let out = envbuild(store.path())
        .env("ENVBUILD_BUILDKIT", "0")
        .args(["build", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the build of the Dockerfile failed")
            && stderr.contains("non-zero code: 7")
            && stderr.contains("no `RUN --mount`"),
        "{stderr}"
    );
    // The layers this build made (" ---> <id>" after " ---> Running in") are gone.
    let mut ran = false;
    let mut layers = Vec::new();
    for line in stderr.lines().map(str::trim) {
        if line.starts_with("---> Running in") {
            ran = true;
        } else if let Some(id) = line.strip_prefix("---> ").filter(|id| id.len() == 12 && ran) {
            layers.push(id.to_owned());
            ran = false;
        }
    }
    assert!(!layers.is_empty(), "the build made no layer: {stderr}");
    for layer in layers {
        assert!(
            engine.image(&layer).await.unwrap().is_none(),
            "layer {layer} of the failed build was left behind"
        );
    }
}

/// `--build-arg` reaches the Dockerfile's `ARG`, its value is a digest in every key document
/// (manifest, `key --json`, `inspect --json`), and a value that is a stored secret's is
/// refused, naming the variable and the secret, never the value.
#[tokio::test(flavor = "multi_thread")]
async fn build_args_reach_the_build_and_stay_out_of_key_documents() {
    let Some(_engine) = engine().await else { return };
    let repo = repo("basic");
    let dockerfile = repo.path().join(".cursor/Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("ARG GREETING=unset\nRUN echo \"$GREETING\" > /opt/greeting\n");
    std::fs::write(&dockerfile, text).unwrap();
    commit(repo.path(), "an ARG");
    let store = tempfile::tempdir().unwrap();
    let value = "hello-from-a-build-arg-2f9c";
    let report = build(store.path(), repo.path(), &["--build-arg", &format!("GREETING={value}")]);
    let id = report["id"].as_str().unwrap();
    let root = store.path().join("rootfs");
    envbuild(store.path()).args(["fetch", id, "--to"]).arg(&root).assert().success();
    assert_eq!(std::fs::read_to_string(root.join("opt/greeting")).unwrap(), format!("{value}\n"));
    for args in [
        vec!["inspect", id, "--json"],
        vec![
            "key",
            "--json",
            "--build-arg",
            &format!("GREETING={value}"),
            "--repo",
            repo.path().to_str().unwrap(),
        ],
    ] {
        let out = envbuild(store.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(value), "{args:?} shows the value");
    }
    for file in super::walk(store.path().join("v1").as_path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the value",
            file.display()
        );
    }
    // The same value as a stored secret: refused before anything is built.
    let secret = "s3cr3t-value-of-a-token-88";
    let home = tempfile::tempdir().unwrap();
    let set = envbuild(store.path())
        .env("ENVBUILD_MASTER_KEY", home.path().join("master.key"))
        .current_dir(repo.path())
        .args(["secrets", "set", "NPM_TOKEN"])
        .write_stdin(secret)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let out = envbuild(store.path())
        .env("ENVBUILD_MASTER_KEY", home.path().join("master.key"))
        .args(["build", "--build-arg", &format!("TOKEN={secret}"), "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--build-arg TOKEN") && stderr.contains("NPM_TOKEN") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");
}
