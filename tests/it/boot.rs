//! Secrets and boot against the real engine (and moto's KMS): values reach install and the
//! environment as declared, are masked in every sink, and never get into a snapshot; a booted
//! environment runs install, start and its terminals in order, keeps them running, shows their
//! logs, and goes away on stop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use super::build::{engine, envbuild, json, repo};

/// `envbuild` with a private master key and config, on `store`.
fn eb(store: &Path, home: &Path) -> assert_cmd::Command {
    let mut cmd = envbuild(store);
    cmd.env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("ENVBUILD_KMS_KEY_ID");
    cmd
}

/// Sets a secret for every repository of the store (`--scope workspace`) unless `extra` names
/// another scope.
fn set_secret(store: &Path, home: &Path, name: &str, value: &str, extra: &[&str]) -> Output {
    let scoped = extra.iter().any(|a| matches!(*a, "--scope" | "--env" | "--repo"));
    let default: &[&str] = if scoped { &[] } else { &["--scope", "workspace"] };
    eb(store, home)
        .args(["secrets", "set", name])
        .args(default)
        .args(extra)
        .write_stdin(value)
        .output()
        .unwrap()
}

/// Boots snapshot `id` as `name` with `repo` at /workspace, without network, reporting JSON.
fn boot_repo(store: &Path, home: &Path, id: &str, name: &str, repo: &Path) -> Output {
    eb(store, home)
        .args(["boot", id, "--engine", "docker", "--network", "none", "--json", "--name", name, "--repo"])
        .arg(repo)
        .output()
        .unwrap()
}

fn all_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Removes the environment `name` when the test ends, passed or failed.
struct Removes(String);

impl Drop for Removes {
    fn drop(&mut self) {
        let filter = format!("label=envbuild.name={}", self.0);
        if let Ok(out) =
            std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

const INSTALL_VALUE: &str = "install-secret-5a9c1e77f0";
const BOOT_VALUE: &str = "boot-secret-0b3d9f4c21";

#[test]
fn secrets_are_listed_without_values_and_short_values_are_not_redacted() {
    let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(
        set_secret(store.path(), home.path(), "API_TOKEN", INSTALL_VALUE, &["--when", "install"])
            .status
            .success()
    );
    assert!(
        set_secret(store.path(), home.path(), "API_TOKEN", INSTALL_VALUE, &["--when", "install"])
            .status
            .success()
    );
    assert!(
        set_secret(store.path(), home.path(), "NEXTJS_KEY", BOOT_VALUE, &["--env", "frontend"])
            .status
            .success()
    );
    let out = eb(store.path(), home.path()).args(["secrets", "ls", "--json"]).output().unwrap();
    let text = all_text(&out);
    assert!(!text.contains(INSTALL_VALUE) && !text.contains(BOOT_VALUE), "ls printed a value: {text}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| rows.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(row("API_TOKEN")["version"], 2);
    assert_eq!(row("NEXTJS_KEY")["scope"], "env:frontend");
    let mode =
        std::fs::metadata(home.path().join("config/envbuild/master.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(store.path().join("v1/secrets/workspace/API_TOKEN")).unwrap();
    assert!(!stored.contains(INSTALL_VALUE), "the store holds the plaintext");

    let short = set_secret(store.path(), home.path(), "PIN", "1234", &[]);
    assert_eq!(short.status.code(), Some(1));
    assert!(all_text(&short).contains("cannot be redacted"));
    let short = set_secret(store.path(), home.path(), "PIN", "1234", &["--no-redact"]);
    assert!(short.status.success() && all_text(&short).contains("cannot be redacted"));
    let wrong = set_secret(store.path(), home.path(), "OTHER", BOOT_VALUE, &["--env", "not a name"]);
    assert!(all_text(&wrong).contains("not a valid scope"), "{}", all_text(&wrong));
    let removed = eb(store.path(), home.path())
        .args(["secrets", "rm", "PIN", "--scope", "workspace"])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", all_text(&removed));
}

/// A leak of a redacted value into the file system refuses the publish, naming the secret
/// and the file, and publishes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn leaks_into_the_snapshot_are_refused() {
    let Some(_engine) = engine().await else { return };
    let cases = [
        ("raw value", "echo $INSTALL_TOKEN > /workspace/token.txt", "workspace/token.txt"),
        ("base64", "echo -n prefix-$INSTALL_TOKEN | base64 > /opt/blob.b64", "opt/blob.b64"),
        (
            "multi-line file",
            "printf 'line one\\nkey: %s\\nline three\\n' $INSTALL_TOKEN > /workspace/config.yaml",
            "workspace/config.yaml",
        ),
    ];
    for (what, install, path) in cases {
        let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert!(
            set_secret(store.path(), home.path(), "INSTALL_TOKEN", INSTALL_VALUE, &["--when", "install"])
                .status
                .success()
        );
        let repo = repo("failing");
        let config = serde_json::json!({ "build": { "dockerfile": "Dockerfile" }, "install": install });
        std::fs::write(repo.path().join(".cursor/environment.json"), config.to_string()).unwrap();
        super::build::commit(repo.path(), what);
        let out = eb(store.path(), home.path()).args(["build", "--repo"]).arg(repo.path()).output().unwrap();
        let text = all_text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains("`INSTALL_TOKEN` in `") && text.contains(path), "{what}: {text}");
        assert!(text.contains("nothing was published"), "{what}: {text}");
        assert!(!text.contains(INSTALL_VALUE), "{what}: the error printed the value");
        let snapshots = std::fs::read_dir(store.path().join("v1/snapshots")).map_or(0, Iterator::count);
        let keys = std::fs::read_dir(store.path().join("v1/keys")).map_or(0, Iterator::count);
        assert_eq!((snapshots, keys), (0, 0), "{what}: something was published");
    }
}

/// The boot fixture end to end: secrets reach install and the environment as declared, are
/// masked in the build output, the boot output and the logs; the steps run in order; the
/// terminals keep running and serve; `stop` cleans up.
#[tokio::test(flavor = "multi_thread")]
async fn boot_runs_install_start_and_terminals_with_masked_secrets() {
    let Some(engine) = engine().await else { return };
    let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(
        set_secret(store.path(), home.path(), "INSTALL_TOKEN", INSTALL_VALUE, &["--when", "install"])
            .status
            .success()
    );
    assert!(
        set_secret(store.path(), home.path(), "BOOT_TOKEN", BOOT_VALUE, &["--when", "boot"]).status.success()
    );
    let repo = repo("boot");
    let built =
        eb(store.path(), home.path()).args(["build", "--json", "--repo"]).arg(repo.path()).output().unwrap();
    let build_text = all_text(&built);
    let report = json(&built);
    assert!(build_text.contains("install sees ***"), "install saw its secret, masked: {build_text}");
    assert!(!build_text.contains(INSTALL_VALUE) && !build_text.contains(BOOT_VALUE));

    let name = format!("envbuild-test-boot-{}", std::process::id());
    let _removes = Removes(name.clone());
    let booted = boot_repo(store.path(), home.path(), report["id"].as_str().unwrap(), &name, repo.path());
    let boot_text = all_text(&booted);
    assert!(booted.status.success(), "{boot_text}");
    assert!(boot_text.contains("install sees ***"), "{boot_text}");
    assert!(!boot_text.contains(INSTALL_VALUE) && !boot_text.contains(BOOT_VALUE), "{boot_text}");
    let boot: serde_json::Value = serde_json::from_slice(&booted.stdout).unwrap();
    let steps: Vec<&str> =
        boot["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["image", "container", "install", "start", "terminals"]);

    // The client terminal fetched the page from the web terminal, then printed the order.
    let mut client = String::new();
    for _ in 0..100 {
        let out = eb(store.path(), home.path()).args(["logs", &name, "client"]).output().unwrap();
        client = String::from_utf8_lossy(&out.stdout).into_owned();
        if client.contains("client sees") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(client.contains("served by the web terminal"), "{client}");
    assert!(client.contains("install\nstart\nterminal\n"), "the steps ran out of order: {client}");
    assert!(client.contains("client sees ***"), "the terminal saw the boot secret, masked: {client}");
    let start = eb(store.path(), home.path()).args(["logs", &name, "start"]).output().unwrap();
    let start = String::from_utf8_lossy(&start.stdout);
    assert!(start.contains("start sees ***") && !start.contains(BOOT_VALUE), "{start}");
    let all = eb(store.path(), home.path()).args(["logs", &name]).output().unwrap();
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(all.contains("serving") && !all.contains(BOOT_VALUE) && !all.contains(INSTALL_VALUE), "{all}");
    let unknown = eb(store.path(), home.path()).args(["logs", &name, "nope"]).output().unwrap();
    assert!(!unknown.status.success());
    let unknown = String::from_utf8_lossy(&unknown.stderr);
    assert!(unknown.contains("no terminal `nope`") && unknown.contains("`client`"), "{unknown}");

    // Following streams what is already there and keeps the stream open.
    let mut follow = std::process::Command::new(assert_cmd::cargo::cargo_bin("envbuild"))
        .env_remove("RUST_LOG")
        .env("ENVBUILD_STORE", store.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .args(["logs", &name, "client", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, so a `logs -f` that never shows the line fails the test instead of hanging it.
    let watched = rustix::process::Pid::from_raw(i32::try_from(follow.id()).unwrap()).unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_mins(1));
        let _ = rustix::process::kill_process(watched, rustix::process::Signal::KILL);
    });
    let mut stdout = follow.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("client sees") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "logs -f ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(follow.try_wait().unwrap().is_none(), "logs -f exited instead of following");
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Neither value is anywhere an engine or envbuild keeps data: every container's and image's
    // configuration, the images' history, the store (raw, base64, hex), `ps`, `inspect`, `key`.
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut dumps: Vec<(String, Vec<u8>)> = Vec::new();
    for id in docker(&["ps", "-aq", "--filter", "label=envbuild.name"]).split_whitespace() {
        dumps.push((format!("docker inspect {id}"), docker(&["inspect", id]).into_bytes()));
    }
    let images = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for image in images.lines().filter(|i| i.starts_with("envbuild-")) {
        dumps.push((
            format!("docker image inspect {image}"),
            docker(&["image", "inspect", image]).into_bytes(),
        ));
        dumps.push((
            format!("docker history {image}"),
            docker(&["history", "--no-trunc", image]).into_bytes(),
        ));
    }
    for args in [
        vec!["ps", "--json"],
        vec!["inspect", "--json", report["id"].as_str().unwrap()],
        vec!["key", "--json", "--repo", repo.path().to_str().unwrap()],
    ] {
        dumps.push((
            format!("envbuild {}", args.join(" ")),
            eb(store.path(), home.path()).args(&args).output().unwrap().stdout,
        ));
    }
    for file in super::walk(store.path()) {
        dumps.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    for value in [INSTALL_VALUE, BOOT_VALUE] {
        let forms = [
            value.to_owned(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value),
            hex::encode(value),
        ];
        for (sink, bytes) in &dumps {
            for form in &forms {
                assert!(!bytes.windows(form.len()).any(|w| w == form.as_bytes()), "`{form}` is in {sink}");
            }
        }
    }

    // The environment finds its settings: its normalized config, read-only, and variables.
    let settings = std::process::Command::new("docker")
        .args(["exec", &name, "sh", "-c", "ls -l /etc/envbuild/environment.json; cat $ENVBUILD_CONFIG; echo; echo testing=$ENVBUILD_ENABLE_TESTING"])
        .output()
        .unwrap();
    let settings = String::from_utf8_lossy(&settings.stdout);
    assert!(settings.contains("-r--r--r--"), "{settings}");
    assert!(
        settings.contains("\"agentCanUpdateSnapshot\": false") && settings.contains("testing=true"),
        "{settings}"
    );

    // Still running a moment later.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let ps: serde_json::Value = json(&eb(store.path(), home.path()).args(["ps", "--json"]).output().unwrap());
    let mine = ps.as_array().unwrap().iter().find(|e| e["name"] == name.as_str()).expect("ps lists it");
    assert_eq!(mine["running"], true);
    assert_eq!(mine["terminals"], serde_json::json!(["web", "client"]));

    assert!(eb(store.path(), home.path()).args(["stop", &name]).output().unwrap().status.success());
    assert!(
        engine.containers(&format!("envbuild.name={name}")).await.unwrap().is_empty(),
        "stop left the container"
    );
}

/// Secrets sealed by moto's KMS open at boot; with KMS unreachable the boot fails naming them
/// and starts nothing; a record moved to another scope does not open.
#[cfg(feature = "kms")]
#[tokio::test(flavor = "multi_thread")]
async fn kms_secrets_open_and_an_unreachable_kms_stops_the_boot() {
    let Some(endpoint) = super::s3::moto_endpoint() else { return };
    let Some(engine) = engine().await else { return };
    let options = envbuild_secrets::kms::KmsOptions {
        endpoint_url: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
    };
    let key_id = envbuild_secrets::kms::KmsKey::create_for_tests(&options).await.unwrap();
    let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_aws = |cmd: &mut assert_cmd::Command, endpoint: &str| {
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
    };
    let mut set = eb(store.path(), home.path());
    with_aws(&mut set, &endpoint);
    let out = set
        .args(["secrets", "set", "BOOT_TOKEN", "--scope", "workspace", "--kms-key-id", &key_id])
        .write_stdin(BOOT_VALUE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_text(&out));
    let record = std::fs::read_to_string(store.path().join("v1/secrets/workspace/BOOT_TOKEN")).unwrap();
    assert!(record.contains("\"kind\": \"kms\""), "{record}");

    let repo = repo("boot");
    let mut build = eb(store.path(), home.path());
    with_aws(&mut build, &endpoint);
    let report = json(&build.args(["build", "--json", "--repo"]).arg(repo.path()).output().unwrap());
    let id = report["id"].as_str().unwrap().to_owned();

    // KMS unreachable: the boot fails before creating anything, naming the secret.
    let name = format!("envbuild-test-kms-{}", std::process::id());
    let _removes = Removes(name.clone());
    let mut boot = eb(store.path(), home.path());
    with_aws(&mut boot, "http://127.0.0.1:9");
    let out = boot
        .args(["boot", &id, "--engine", "docker", "--network", "none", "--name", &name])
        .output()
        .unwrap();
    let text = all_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("`BOOT_TOKEN`") && text.contains("nothing was started"), "{text}");
    assert!(engine.containers(&format!("envbuild.name={name}")).await.unwrap().is_empty());

    // KMS reachable: it boots and the terminal sees the value (masked in the logs).
    let mut boot = eb(store.path(), home.path());
    with_aws(&mut boot, &endpoint);
    let out = boot
        .args(["boot", &id, "--engine", "docker", "--network", "none", "--name", &name])
        .output()
        .unwrap();
    let text = all_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(BOOT_VALUE), "{text}");
    let mut logs = eb(store.path(), home.path());
    with_aws(&mut logs, &endpoint);
    let logs = logs.args(["logs", &name, "start"]).output().unwrap();
    let logs = all_text(&logs);
    assert!(logs.contains("start sees ***") && !logs.contains(BOOT_VALUE), "{logs}");
    let mut stop = eb(store.path(), home.path());
    stop.args(["stop", &name]).output().unwrap();

    // A record moved to another scope does not open there (its scope is bound into it).
    let team = store.path().join("v1/secrets/env=core");
    std::fs::create_dir_all(&team).unwrap();
    std::fs::rename(store.path().join("v1/secrets/workspace/BOOT_TOKEN"), team.join("BOOT_TOKEN")).unwrap();
    let mut boot = eb(store.path(), home.path());
    with_aws(&mut boot, &endpoint);
    let out = boot
        .args(["boot", &id, "--engine", "docker", "--network", "none", "--name", &name, "--group", "core"])
        .output()
        .unwrap();
    let text = all_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot be decrypted") && !text.contains(BOOT_VALUE), "{text}");
    assert!(engine.containers(&format!("envbuild.name={name}")).await.unwrap().is_empty());
}

/// Copies the host's `binary` to `rootfs/bin` (the fixture's PATH) and the shared libraries
/// it loads under their own paths: a way to put a dynamically linked tool into a `FROM
/// scratch` image.
fn copy_with_libraries(binary: &str, rootfs: &Path) {
    let ldd = std::process::Command::new("ldd").arg(binary).output().unwrap();
    let text = String::from_utf8_lossy(&ldd.stdout);
    let libraries =
        text.lines().filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')));
    let name = Path::new(binary).file_name().unwrap();
    let copies = libraries.map(|l| (l, rootfs.join(l.trim_start_matches('/'))));
    for (file, target) in std::iter::once((binary, rootfs.join("bin").join(name))).chain(copies) {
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, &target).unwrap();
    }
}

/// With tmux in the image, the terminals run as windows of one tmux session, supervised all
/// the same.
#[tokio::test(flavor = "multi_thread")]
async fn terminals_run_in_tmux_when_the_image_has_it() {
    let Some(engine) = engine().await else { return };
    if !Path::new("/usr/bin/tmux").exists() {
        assert!(
            std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
            "tmux is not installed, but this run requires it: run the tests through scripts/test"
        );
        return;
    }
    let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let repo = repo("boot");
    let context = repo.path().join(".cursor");
    copy_with_libraries("/usr/bin/tmux", &context.join("rootfs"));
    // tmux needs a UTF-8 locale; Debian's libc ships C.UTF-8 there.
    let locale = context.join("rootfs/usr/lib/locale/C.utf8");
    std::fs::create_dir_all(&locale).unwrap();
    for entry in std::fs::read_dir("/usr/lib/locale/C.utf8").unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), locale.join(entry.file_name())).unwrap();
        }
    }
    let dockerfile = context.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, format!("{text}COPY rootfs/ /\n")).unwrap();
    std::fs::write(context.join(".gitignore"), "busybox\nrootfs/\n").unwrap();
    super::build::commit(repo.path(), "tmux");
    let report = json(
        &eb(store.path(), home.path()).args(["build", "--json", "--repo"]).arg(repo.path()).output().unwrap(),
    );

    let name = format!("envbuild-test-tmux-{}", std::process::id());
    let _removes = Removes(name.clone());
    let booted = boot_repo(store.path(), home.path(), report["id"].as_str().unwrap(), &name, repo.path());
    let boot: serde_json::Value = json(&booted);
    assert_eq!(boot["terminal_mode"], "tmux", "{}", all_text(&booted));
    let windows = std::process::Command::new("docker")
        .args(["exec", "-u", "1000", &name, "tmux", "list-windows", "-t", "envbuild", "-F", "#{window_name}"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&windows.stdout),
        "web\nclient\n",
        "{}",
        String::from_utf8_lossy(&windows.stderr)
    );
    let mut client = String::new();
    for _ in 0..100 {
        let out = eb(store.path(), home.path()).args(["logs", &name, "client"]).output().unwrap();
        client = String::from_utf8_lossy(&out.stdout).into_owned();
        if client.contains("client sees") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        client.contains("served by the web terminal") && client.contains("install\nstart\nterminal\n"),
        "{client}"
    );
    assert!(eb(store.path(), home.path()).args(["stop", &name]).output().unwrap().status.success());
    assert!(engine.containers(&format!("envbuild.name={name}")).await.unwrap().is_empty());
}
