//! `envbuild serve`'s registry API (`/v2/`) as image clients meet it: plain HTTP for the
//! protocol's details, then the real clients on loopback — `docker pull` and `docker run`,
//! `skopeo copy`, containerd's `ctr images pull`, `podman pull` — and a damaged chunk that must fail a pull.

use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;

use base64::Engine as _;
use envbuild_cache::digest::Digest;
use envbuild_cache::testing::noise;
use envbuild_cache::{SnapshotId, Store, catalog, layout};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE, USER_AGENT, WWW_AUTHENTICATE};

use super::export::{run, tool};
use super::serve::{Server, http, import, rootfs};

fn basic(token: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("anyone:{token}")))
}

/// `GET` of a `/v2` path with the read token.
async fn get(
    server: &Server,
    path: &str,
    extra: &[(reqwest::header::HeaderName, &str)],
) -> reqwest::Response {
    let mut request = http().get(format!("{}{path}", server.url)).header(AUTHORIZATION, basic(&server.read));
    for (name, value) in extra {
        request = request.header(name, *value);
    }
    request.send().await.unwrap()
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body = json(response).await;
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).unwrap().to_str().unwrap().to_owned()
}

/// The snapshot's tar stream, as `fetch --tar` writes it.
fn fetch_tar(server: &Server, id: &str) -> Vec<u8> {
    let out = server.cli(&server.read).args(["fetch", id, "--tar", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Decompressed by the `zstd` tool, an implementation other than envbuild's.
fn unzstd(bytes: &[u8]) -> Vec<u8> {
    let mut child = Process::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "zstd -d failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_api_serves_both_layers_from_the_chunks() {
    let server = Server::start();
    let id = import(&server, &rootfs(7));
    let hex = id.trim_start_matches("sha256:").to_owned();
    let tar = fetch_tar(&server, &id);

    // Authentication: a Basic challenge without a token, 401 for a wrong one.
    let anonymous = http().get(format!("{}/v2/", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&anonymous, WWW_AUTHENTICATE.as_str()).starts_with("Basic realm="));
    assert_eq!(header(&anonymous, "docker-distribution-api-version"), "registry/2.0");
    assert_eq!(error_code(anonymous).await, "UNAUTHORIZED");
    let wrong = http()
        .get(format!("{}/v2/snapshots/manifests/{hex}", server.url))
        .header(AUTHORIZATION, basic("ebt_0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(&server, "/v2/", &[]).await.status(), StatusCode::OK);

    // A tag gives the zstd variant; the manifest's digest is its bytes' digest.
    let response = get(&server, &format!("/v2/snapshots/manifests/{hex}"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/vnd.oci.image.manifest.v1+json");
    let zstd_digest = header(&response, "docker-content-digest");
    let body = response.bytes().await.unwrap();
    assert_eq!(Digest::of(&body).to_string(), zstd_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");

    // The zstd layer is the stored chunks: it decompresses to the snapshot's tar.
    let blob = get(&server, &format!("/v2/snapshots/blobs/{}", layer["digest"].as_str().unwrap()), &[]).await;
    assert_eq!(blob.status(), StatusCode::OK);
    let zstd_layer = blob.bytes().await.unwrap();
    assert_eq!(Digest::of(&zstd_layer).to_string(), layer["digest"].as_str().unwrap());
    assert_eq!(zstd_layer.len() as u64, layer["size"].as_u64().unwrap());
    assert!(unzstd(&zstd_layer) == tar, "the zstd layer does not decompress to the snapshot's tar");

    // The configuration: the tar's digest as diff_id, labels naming the snapshot.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config_bytes =
        get(&server, &format!("/v2/snapshots/blobs/{config_digest}"), &[]).await.bytes().await.unwrap();
    assert_eq!(Digest::of(&config_bytes).to_string(), config_digest);
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], Digest::of(&tar).to_string());
    assert_eq!(config["config"]["Labels"]["envbuild.snapshot"], id);

    // `-tar` gives the uncompressed variant: its layer is the tar, byte for byte, with ranges.
    let response = get(&server, &format!("/v2/snapshots/manifests/{hex}-tar"), &[]).await;
    let tar_digest = header(&response, "docker-content-digest");
    let tar_manifest = json(response).await;
    assert_eq!(tar_manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let tar_layer = format!("/v2/snapshots/blobs/{}", tar_manifest["layers"][0]["digest"].as_str().unwrap());
    assert!(
        get(&server, &tar_layer, &[]).await.bytes().await.unwrap() == tar,
        "the tar layer is not the tar"
    );
    let middle = get(&server, &tar_layer, &[(RANGE, "bytes=1000000-3999999")]).await;
    assert_eq!(middle.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&middle, CONTENT_RANGE.as_str()), format!("bytes 1000000-3999999/{}", tar.len()));
    assert!(middle.bytes().await.unwrap() == tar[1_000_000..4_000_000]);
    let tail = get(&server, &tar_layer, &[(RANGE, "bytes=-700")]).await.bytes().await.unwrap();
    assert!(tail == tar[tar.len() - 700..]);
    let beyond = get(&server, &tar_layer, &[(RANGE, &format!("bytes={}-", tar.len()))]).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // A Docker engine before 23 cannot read zstd: a plain tag gives it the tar variant.
    let docker =
        get(&server, &format!("/v2/snapshots/manifests/{hex}"), &[(USER_AGENT, "docker/20.10.24 go/go1.19")])
            .await;
    assert_eq!(header(&docker, "docker-content-digest"), tar_digest);

    // By digest, either variant; HEAD has the headers and no body.
    for digest in [&zstd_digest, &tar_digest] {
        let body =
            get(&server, &format!("/v2/snapshots/manifests/{digest}"), &[]).await.bytes().await.unwrap();
        assert_eq!(&Digest::of(&body).to_string(), digest);
    }
    let head = http()
        .head(format!("{}/v2/snapshots/manifests/{zstd_digest}", server.url))
        .header(AUTHORIZATION, format!("Bearer {}", server.read))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), body.len().to_string());
    assert!(head.bytes().await.unwrap().is_empty());

    // A ref is a tag too.
    let client: Arc<dyn Store> = Arc::new(server.client(&server.write));
    let snapshot = SnapshotId(id.parse::<Digest>().unwrap());
    catalog::set_ref(&client, "stable", snapshot).await.unwrap();
    let by_ref = get(&server, "/v2/snapshots/manifests/stable", &[]).await;
    assert_eq!(header(&by_ref, "docker-content-digest"), zstd_digest);
    let tags = json(get(&server, "/v2/snapshots/tags/list", &[]).await).await;
    assert_eq!(tags["tags"], serde_json::json!([hex, "stable"]));

    // The spec's errors.
    let missing = format!("/v2/snapshots/manifests/{}", "0".repeat(64));
    assert_eq!(error_code(get(&server, &missing, &[]).await).await, "MANIFEST_UNKNOWN");
    let missing = format!("/v2/snapshots/blobs/sha256:{}", "0".repeat(64));
    assert_eq!(error_code(get(&server, &missing, &[]).await).await, "BLOB_UNKNOWN");
    assert_eq!(
        error_code(get(&server, &format!("/v2/other/manifests/{hex}"), &[]).await).await,
        "NAME_UNKNOWN"
    );
    let push = http()
        .post(format!("{}/v2/snapshots/blobs/uploads/", server.url))
        .header(AUTHORIZATION, basic(&server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(push).await, "UNSUPPORTED");

    // Nothing is stored twice: beside the snapshot only the side record and its pointers.
    let extra: Vec<String> = server
        .stored()
        .into_iter()
        .filter(|p| p.starts_with(layout::IMAGES) || p.starts_with(layout::DIGESTS))
        .collect();
    assert_eq!(extra.len(), 1 + 5, "{extra:?}");
    let record_bytes: u64 =
        extra.iter().map(|p| std::fs::metadata(server.store.join(p)).unwrap().len()).sum();
    assert!(record_bytes < 4096, "the side records take {record_bytes} bytes");

    // Removing the snapshot removes its record; gc the pointers that named it.
    let rm = server.cli(&server.admin).args(["rm", "--force", &id]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    let gc = server.cli(&server.admin).args(["gc", "--grace", "0s", "--json"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["removed_image_records"], 5);
    let left: Vec<String> = server
        .stored()
        .into_iter()
        .filter(|p| p.starts_with(layout::IMAGES) || p.starts_with(layout::DIGESTS))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let gone = get(&server, &format!("/v2/snapshots/manifests/{zstd_digest}"), &[]).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

/// Flips one byte in the middle of the first chunk file of the store at `store`.
fn damage_a_chunk(store: &Path) {
    let mut dirs = vec![store.join(layout::CHUNKS)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.metadata().unwrap().len() > 10_000 {
                let mut bytes = std::fs::read(&path).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x40;
                std::fs::write(&path, bytes).unwrap();
                return;
            }
        }
    }
    panic!("no chunk to damage");
}

fn skopeo_copy(server: &Server, reference: &str, creds: &str, to: &Path) -> std::process::Output {
    let source = format!("docker://{}/snapshots{reference}", server.url.trim_start_matches("http://"));
    Process::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds", creds])
        .arg(source)
        // `dir:` keeps the layers and the manifest as they came (`oci:` would gzip a tar).
        .arg(format!("dir:{}", to.display()))
        .output()
        .unwrap()
}

/// What skopeo copied into `dir`: the manifest's bytes, its one layer's media type and bytes.
fn copied(dir: &Path) -> (Vec<u8>, String, Vec<u8>) {
    let manifest_bytes = std::fs::read(dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let layer = &manifest["layers"][0];
    let blob =
        std::fs::read(dir.join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"))).unwrap();
    (manifest_bytes, layer["mediaType"].as_str().unwrap().to_owned(), blob)
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_both_variants_and_a_damaged_chunk_fails_the_copy() {
    let Some(()) = tool("skopeo") else { return };
    let server = Server::start();
    let id = import(&server, &rootfs(11));
    let hex = id.trim_start_matches("sha256:");
    let tar = fetch_tar(&server, &id);
    let work = tempfile::tempdir().unwrap();
    let creds = format!("anyone:{}", server.read);

    // The uncompressed variant: the layer is `fetch --tar`'s bytes, and the manifest is the
    // one `fetch --oci` writes.
    let plain = work.path().join("plain");
    let out = skopeo_copy(&server, &format!(":{hex}-tar"), &creds, &plain);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (manifest, media_type, layer) = copied(&plain);
    assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar");
    assert!(layer == tar, "the layer skopeo copied is not the snapshot's tar");
    let local = work.path().join("local");
    let fetched = server.cli(&server.read).args(["fetch", &id, "--oci"]).arg(&local).output().unwrap();
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], Digest::of(&manifest).to_string());

    // The zstd variant, by the manifest digest the tag resolves to.
    let zstd = work.path().join("zstd");
    let out = skopeo_copy(&server, &format!(":{hex}"), &creds, &zstd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, media_type, layer) = copied(&zstd);
    assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    assert!(unzstd(&layer) == tar);

    // Refused without the right token.
    let out = skopeo_copy(&server, &format!(":{hex}"), "anyone:ebt_wrong", &work.path().join("denied"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).to_lowercase().contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A flipped byte in a chunk: the copy fails; it never completes with other content.
    damage_a_chunk(&server.store);
    for (name, tag) in [("damaged-tar", format!(":{hex}-tar")), ("damaged-zstd", format!(":{hex}"))] {
        let out = skopeo_copy(&server, &tag, &creds, &work.path().join(name));
        assert!(!out.status.success(), "a copy over a damaged chunk succeeded ({name})");
    }
}

/// Builds the `basic` fixture into the server's store; returns the snapshot id.
fn build_into(server: &Server) -> (tempfile::TempDir, String) {
    let repo = super::build::repo("basic");
    let report = super::build::json(
        &super::build::envbuild(&server.store)
            .args(["build", "--json", "--repo"])
            .arg(repo.path())
            .output()
            .unwrap(),
    );
    (repo, report["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_pulls_a_snapshot_by_digest_and_runs_it() {
    let Some(_engine) = super::build::engine().await else { return };
    let server = Server::start();
    let (_repo, id) = build_into(&server);
    let hex = id.trim_start_matches("sha256:");
    let host = server.url.trim_start_matches("http://").to_owned();
    // The uncompressed variant's digest: Docker 20.10 reads no zstd.
    let digest = header(
        &get(&server, &format!("/v2/snapshots/manifests/{hex}-tar"), &[]).await,
        "docker-content-digest",
    );
    let config = tempfile::tempdir().unwrap();
    let docker = || {
        let mut command = Process::new("docker");
        command.arg("--config").arg(config.path());
        command
    };
    let image = format!("{host}/snapshots@{digest}");

    let out = docker().args(["pull", &image]).output().unwrap();
    assert!(!out.status.success(), "a pull without credentials succeeded");
    let mut login = docker()
        .args(["login", &host, "-u", "ci", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), server.read.as_bytes()).unwrap();
    let login = login.wait_with_output().unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    run(docker().args(["pull", "--quiet", &image]));
    let printed = run(docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "0",
        &image,
        "cat",
        "/workspace/built.txt",
    ]));
    let _ = docker().args(["rmi", "--force", &image]).output();
    assert_eq!(printed, "built\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_the_zstd_variant() {
    let Some(_engine) = super::build::engine().await else { return };
    let Some(()) = tool("ctr") else { return };
    let server = Server::start();
    let id = import(&server, &rootfs(13));
    let hex = id.trim_start_matches("sha256:");
    let host = server.url.trim_start_matches("http://").to_owned();
    // A system containerd, else the engine's own (dockerd starts one), in a namespace of this
    // test's.
    let address = ["/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock"]
        .into_iter()
        .find(|socket| Path::new(socket).exists())
        .expect("no containerd socket, though the Docker engine runs");
    let namespace = format!("envbuild-test-{}", std::process::id());
    let ctr = || {
        let mut command = Process::new("ctr");
        command.args(["--address", address, "--namespace", &namespace]);
        command
    };
    let image = format!("{host}/snapshots:{hex}");
    let user = format!("anyone:{}", server.read);
    let denied = ctr()
        .args(["images", "pull", "--plain-http", "--user", "anyone:ebt_wrong", &image])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "a pull with a wrong token succeeded");
    run(ctr().args(["images", "pull", "--plain-http", "--user", &user, &image]));
    let listed = run(ctr().args(["images", "ls", "--quiet"]));
    let layers = run(ctr().args(["content", "ls", "--quiet"]));
    let _ = ctr().args(["images", "rm", &image]).output();
    let _ = Process::new("ctr").args(["--address", address, "namespaces", "rm", &namespace]).output();
    assert!(listed.contains(&image), "{listed}");
    // containerd verified the zstd layer's digest as it stored it.
    let zstd: serde_json::Value =
        json(get(&server, &format!("/v2/snapshots/manifests/{hex}"), &[]).await).await;
    assert!(layers.contains(zstd["layers"][0]["digest"].as_str().unwrap()), "{layers}");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_pulls_by_digest_and_its_files_are_the_snapshots() {
    let Some(()) = tool("podman") else { return };
    let server = Server::start();
    let id = import(&server, &rootfs(17));
    let hex = id.trim_start_matches("sha256:");
    let host = server.url.trim_start_matches("http://").to_owned();
    let served = get(&server, &format!("/v2/snapshots/manifests/{hex}"), &[]).await;
    let digest = served.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    // Its own storage, so the test leaves nothing in the host's.
    let work = tempfile::tempdir().unwrap();
    let podman = || {
        let mut command = Process::new("podman");
        command.args(["--root", &work.path().join("root").display().to_string()]);
        command.args(["--runroot", &work.path().join("run").display().to_string()]);
        command.args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
        command
    };
    let image = format!("{host}/snapshots@{digest}");
    let denied = podman()
        .args(["pull", "--quiet", "--tls-verify=false", "--creds", "anyone:ebt_wrong", &image])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "a pull with a wrong token succeeded");
    let creds = format!("anyone:{}", server.read);
    run(podman().args(["pull", "--quiet", "--tls-verify=false", "--creds", &creds, &image]));
    // The image's files are the snapshot's: read one through a mount of the pulled image.
    let mounted = run(podman().args(["image", "mount", &image]));
    let file = std::fs::read(Path::new(mounted.trim()).join("opt/tool.bin"));
    let _ = podman().args(["image", "unmount", "--all"]).output();
    let _ = podman().args(["rmi", "--all", "--force"]).output();
    let file = file.expect("the pulled image has no /opt/tool.bin");
    assert!(file == noise(5_000_000, 17), "the pulled file is not the snapshot's");
}
