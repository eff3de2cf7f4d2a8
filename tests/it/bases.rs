//! Cursor's bases against the real engine: an `image` base (a locally tagged image standing in
//! for a registry one, since no registry is reachable here), a `dockerfileContents` base, the
//! default base (`ENVBUILD_BASE_IMAGE`), and a BuildKit Dockerfile with a cache mount and a
//! secret mount whose value is absent from the image, its history, the snapshot and every
//! output.

use std::path::Path;
use std::process::Output;

use base64::Engine as _;

use super::build::{commit, engine, envbuild, git, json};

/// A local image standing in for a registry one: busybox, users, `ENV PATH`. Built once per
/// run under a tag no other test uses.
async fn local_base() -> Option<String> {
    let _engine = engine().await?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN mkdir -p /etc /tmp /root && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group && chmod 1777 /tmp\n\
         ENV PATH=/bin\nLABEL stands-in-for=registry\n",
    )
    .unwrap();
    let tag = "envbuild-test/base:stand-in".to_owned();
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(tag)
}

/// A git repository with `.cursor/environment.json` = `config` and `files`.
fn repository(config: &serde_json::Value, files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".cursor")).unwrap();
    std::fs::write(dir.path().join(".cursor/environment.json"), config.to_string()).unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        if path.ends_with("busybox") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    git(dir.path(), &["init", "-q"]);
    commit(dir.path(), "repository");
    dir
}

fn build(store: &Path, repo: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = envbuild(store);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["build", "--json", "--repo"]).arg(repo).output().unwrap()
}

/// The snapshot's file `path`, read from `fetch --tar`.
fn file_in_snapshot(store: &Path, id: &str, path: &str) -> Option<Vec<u8>> {
    let out = envbuild(store).args(["fetch", id, "--tar", "-"]).output().unwrap();
    assert!(out.status.success());
    let mut archive = tar::Archive::new(&out.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return Some(data);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_base_and_the_default_base_are_used_as_they_are() {
    let Some(base) = local_base().await else { return };
    let store = tempfile::tempdir().unwrap();
    let repo = repository(&serde_json::json!({ "image": base, "install": "echo from-image > marker" }), &[]);
    let report = json(&build(store.path(), repo.path(), &[]));
    assert_eq!(
        file_in_snapshot(store.path(), report["id"].as_str().unwrap(), "workspace/marker").unwrap(),
        b"from-image\n"
    );
    let key =
        json(&envbuild(store.path()).args(["key", "--json", "--repo"]).arg(repo.path()).output().unwrap());
    assert_eq!(key["base"]["kind"], "image");
    assert!(key["inputs"]["system"]["bases"][&base].as_str().unwrap().starts_with("sha256:"), "{key}");

    // No base at all: the default base, here the same stand-in.
    let repo = repository(&serde_json::json!({ "install": "echo from-default > marker" }), &[]);
    let report = json(&build(store.path(), repo.path(), &[("ENVBUILD_BASE_IMAGE", &base)]));
    assert_eq!(
        file_in_snapshot(store.path(), report["id"].as_str().unwrap(), "workspace/marker").unwrap(),
        b"from-default\n"
    );
    // An image no registry has: a clear error with a hint.
    let repo = repository(&serde_json::json!({ "image": "envbuild-test/absent:never" }), &[]);
    let out = build(store.path(), repo.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("`envbuild-test/absent:never` is not in the Docker engine")
            && stderr.contains("hint:"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerfile_contents_are_built() {
    let Some(_engine) = engine().await else { return };
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN mkdir -p /etc && echo 'root:x:0:0::/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group && echo inline > /etc/made-by\nENV PATH=/bin\n";
    let config = serde_json::json!({ "build": { "dockerfileContents": dockerfile, "context": "." }, "install": "cat /etc/made-by > marker" });
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let repo = repository(&config, &[("busybox", &busybox)]);
    let store = tempfile::tempdir().unwrap();
    let report = json(&build(store.path(), repo.path(), &[]));
    assert_eq!(
        file_in_snapshot(store.path(), report["id"].as_str().unwrap(), "workspace/marker").unwrap(),
        b"inline\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkit_cache_and_secret_mounts_leave_no_trace_of_the_secret() {
    const VALUE: &str = "bk-build-secret-7f3a9e21c4";
    let Some(engine) = engine().await else { return };
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
        RUN mkdir -p /etc && echo 'root:x:0:0::/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group\n\
        RUN --mount=type=cache,target=/var/cache/build date >> /var/cache/build/runs && wc -l < /var/cache/build/runs > /cache-runs\n\
        RUN --mount=type=secret,id=BUILD_TOKEN wc -c < /run/secrets/BUILD_TOKEN > /secret-length && cat /run/secrets/BUILD_TOKEN | md5sum > /secret-md5\n\
        ENV PATH=/bin\n";
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let repo = repository(
        &serde_json::json!({ "build": { "dockerfile": "Dockerfile" }, "install": "cp /secret-length /secret-md5 ." }),
        &[(".cursor/Dockerfile", dockerfile.as_bytes()), (".cursor/busybox", &busybox)],
    );
    let (store, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_home = |args: &[&str]| {
        let mut cmd = envbuild(store.path());
        cmd.env("XDG_CONFIG_HOME", home.path().join("config")).env_remove("ENVBUILD_KMS_KEY_ID").args(args);
        cmd
    };
    let set = with_home(&["secrets", "set", "BUILD_TOKEN", "--when", "install"])
        .write_stdin(VALUE)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let out = with_home(&["build", "--json", "--repo", repo.path().to_str().unwrap()]).output().unwrap();
    let report = json(&out);
    let id = report["id"].as_str().unwrap();
    // The build read the secret...
    assert_eq!(
        file_in_snapshot(store.path(), id, "workspace/secret-length").unwrap(),
        format!("{}\n", VALUE.len()).as_bytes()
    );
    let expected_md5 = format!("{:x}", md5_of(VALUE.as_bytes()));
    let md5 = file_in_snapshot(store.path(), id, "workspace/secret-md5").unwrap();
    assert!(String::from_utf8_lossy(&md5).starts_with(&expected_md5), "{}", String::from_utf8_lossy(&md5));
    // ...and the cache mount kept what it wrote out of the image.
    assert!(
        file_in_snapshot(store.path(), id, "var/cache/build/runs").is_none(),
        "the cache mount ended up in the image"
    );

    // The value is nowhere: outputs, the image's configuration and history, the snapshot.
    let encodings =
        [VALUE.to_owned(), base64::engine::general_purpose::STANDARD.encode(VALUE), hex::encode(VALUE)];
    let mut haystacks = vec![("build output", [out.stdout.clone(), out.stderr.clone()].concat())];
    let system_image = report["system_image"].as_str().unwrap().to_owned();
    for args in [
        vec!["image", "inspect", system_image.as_str()],
        vec!["history", "--no-trunc", system_image.as_str()],
    ] {
        let dump = std::process::Command::new("docker").args(&args).output().unwrap();
        assert!(dump.status.success());
        haystacks.push(("docker image inspect/history", dump.stdout));
    }
    let tar = envbuild(store.path()).args(["fetch", id, "--tar", "-"]).output().unwrap().stdout;
    haystacks.push(("the snapshot", tar));
    for entry in super::walk(store.path()) {
        haystacks.push(("the store", std::fs::read(entry).unwrap()));
    }
    for (sink, bytes) in &haystacks {
        for encoding in &encodings {
            assert!(
                !bytes.windows(encoding.len()).any(|w| w == encoding.as_bytes()),
                "the secret ({encoding}) is in {sink}"
            );
        }
    }
    drop(engine);
}

/// MD5, enough of it for a test: compare with busybox `md5sum`.
fn md5_of(data: &[u8]) -> u128 {
    let out = std::process::Command::new("/bin/busybox")
        .arg("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    u128::from_str_radix(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap(), 16).unwrap()
}
