//! `envbuild serve` as its users meet it: a real server process on a free port over a local
//! store, driven by the `http://` store client, by plain HTTP requests and by headless Chromium.
//! With `ENVBUILD_TEST_REQUIRE_SERVERS` set, a missing Chromium fails the browser test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use envbuild_cache::Store;
use envbuild_cache::digest::Digest;
use envbuild_cache::layout;
use envbuild_cache::store::conformance;
use envbuild_cache::store::http::{HttpOptions, HttpStore};
use envbuild_cache::store::local::LocalStore;
use envbuild_cache::testing::{RawEntry, noise, write_tar};
use reqwest::StatusCode;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("envbuild")
}

/// A running `envbuild serve`, stopped (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub read: String,
    pub write: String,
    pub admin: String,
    pub store: PathBuf,
    dir: tempfile::TempDir,
}

pub fn new_token(tokens: &Path, role: &str) -> String {
    let out =
        Command::new(bin()).args(["token", "new", "--role", role, "--tokens"]).arg(tokens).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts `envbuild serve` over `store` with `env`; returns the child and its URL.
fn spawn_serve(store: &str, tokens: &Path, env: &[(&str, String)], cache: &Path) -> (Child, String) {
    let mut command = Command::new(bin());
    command
        .env_remove("RUST_LOG")
        .env("XDG_CACHE_HOME", cache)
        .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "5s", "--tokens"])
        .arg(tokens)
        .args(["--store", store])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("http://127.0.0.1:"), "serve printed {line:?}");
    (child, line.trim().to_owned())
}

impl Server {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let tokens = dir.path().join("tokens");
        let read = new_token(&tokens, "read");
        let write = new_token(&tokens, "write");
        let admin = new_token(&tokens, "admin");
        let (child, url) = spawn_serve(store.to_str().unwrap(), &tokens, &[], &dir.path().join("cache"));
        Self { child, url, read, write, admin, store, dir }
    }

    pub fn client(&self, token: &str) -> HttpStore {
        HttpStore::new(&self.url, &HttpOptions { token: Some(token.to_owned()) }).unwrap()
    }

    pub fn cli(&self, token: &str) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.env_remove("RUST_LOG")
            .env("ENVBUILD_STORE", &self.url)
            .env("ENVBUILD_TOKEN", token)
            .env("XDG_CACHE_HOME", self.dir.path().join("client-cache"));
        cmd
    }

    /// Every object the server's store holds.
    pub fn stored(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.store.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(&self.store).unwrap().display().to_string());
                }
            }
        }
        out.retain(|p| !p.contains("/leases/") && !p.contains("tmp"));
        out.sort();
        out
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

/// A root filesystem tar of a few chunks.
pub fn rootfs(seed: u64) -> Vec<u8> {
    write_tar(&[
        RawEntry::dir("etc/"),
        RawEntry::file("etc/os-release", b"NAME=envbuild-test\n"),
        RawEntry::dir("opt/"),
        RawEntry::file("opt/tool.bin", &noise(5_000_000, seed)),
        RawEntry::symlink("opt/tool", "tool.bin"),
    ])
}

/// Imports `tar` through the server with the write token; returns the snapshot id.
pub fn import(server: &Server, tar: &[u8]) -> String {
    let out = server.cli(&server.write).args(["import", "-"]).write_stdin(tar.to_vec()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_store_passes_the_conformance_suite() {
    let server = Server::start();
    // The suite deletes objects: the `admin` role.
    let store: Arc<dyn Store> = Arc::new(server.client(&server.admin));
    conformance::run_all(store, conformance::Options::default()).await;
}

/// A `write` token creates, and may repair a damaged chunk with its verified bytes, but can
/// neither delete nor replace published data; it deletes only its own leases. `admin` may
/// delete, and `gc` through the service needs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_token_cannot_delete_published_data() {
    let server = Server::start();
    let id = import(&server, &rootfs(61));
    let direct = LocalStore::open(&server.store).unwrap();
    let manifest = envbuild_cache::restore::read_manifest(&direct, &id.parse().unwrap()).await.unwrap();
    let chunk = manifest.chunks[0];
    let objects = |path: &str| format!("{}/v1/objects/{path}", server.url);
    let snapshot_path = layout::snapshot(&id.parse().unwrap()).to_string();
    let chunk_path = layout::chunk(&chunk.digest).to_string();
    for path in [&snapshot_path, &chunk_path] {
        let refused = http().delete(objects(path)).bearer_auth(&server.write).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(refused.text().await.unwrap().contains("`admin` role"));
    }
    assert!(server.store.join(&snapshot_path).is_file() && server.store.join(&chunk_path).is_file());
    let lease = objects("v1/leases/write-test");
    assert_eq!(
        http().put(&lease).bearer_auth(&server.write).body("x").send().await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        http().delete(&lease).bearer_auth(&server.write).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // A damaged chunk: its verified bytes from a writer replace it.
    let good = std::fs::read(server.store.join(&chunk_path)).unwrap();
    std::fs::write(server.store.join(&chunk_path), &good[..good.len() - 10]).unwrap();
    let repaired =
        http().put(objects(&chunk_path)).bearer_auth(&server.write).body(good.clone()).send().await.unwrap();
    assert_eq!(repaired.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(server.store.join(&chunk_path)).unwrap(), good);
    // gc through the service (an unreferenced chunk to collect): refused with a write token,
    // done with an admin token.
    let stray = envbuild_cache::chunk::compress(b"stray", 3).unwrap();
    let stray_path = layout::chunk(&Digest::of(b"stray")).to_string();
    let put = http().put(objects(&stray_path)).bearer_auth(&server.write).body(stray).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let refused = server.cli(&server.write).args(["gc", "--grace", "0s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("`admin` role"), "{stderr}");
    assert!(server.store.join(&stray_path).is_file());
    let done = server.cli(&server.admin).args(["gc", "--grace", "0s"]).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(!server.store.join(&stray_path).exists());
    let gone = http().delete(objects(&snapshot_path)).bearer_auth(&server.admin).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
}

/// Import, list, fetch, verify and push through the service with the CLI; the key probe
/// answers only for stored snapshots; a read token cannot write.
#[tokio::test(flavor = "multi_thread")]
async fn every_command_works_through_the_service() {
    let server = Server::start();
    let tar = rootfs(1);
    let id = import(&server, &tar);

    let fetched = server.cli(&server.read).args(["fetch", &id, "--tar", "-"]).output().unwrap();
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let direct = LocalStore::open(&server.store).unwrap();
    let manifest = envbuild_cache::restore::read_manifest(&direct, &id.parse().unwrap()).await.unwrap();
    assert_eq!(fetched.stdout.len() as u64, manifest.size);
    let streamed = http()
        .get(format!("{}/v1/snapshots/{id}/rootfs.tar", server.url))
        .bearer_auth(&server.read)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(streamed == fetched.stdout, "rootfs.tar differs from fetch --tar");

    let ls = server.cli(&server.read).args(["ls", "--json"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&id));
    let verify = server.cli(&server.read).args(["verify", "--read-data"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));

    // A read token cannot import; nothing new is stored.
    let before = server.stored();
    let refused = server.cli(&server.read).args(["import", "-"]).write_stdin(rootfs(2)).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`write` role"));
    assert_eq!(server.stored(), before);

    // Push from a local store to the service and pull it back elsewhere.
    let local = tempfile::tempdir().unwrap();
    let local_store = local.path().join("store");
    let out = server
        .cli(&server.write)
        .env("ENVBUILD_STORE", &local_store)
        .args(["import", "-"])
        .write_stdin(rootfs(3))
        .output()
        .unwrap();
    let other = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    let push = server
        .cli(&server.write)
        .env("ENVBUILD_STORE", &local_store)
        .args(["push", &other, "--to", &server.url])
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let back = local.path().join("back");
    let pull = server
        .cli(&server.read)
        .env("ENVBUILD_STORE", &back)
        .args(["pull", &other, "--from", &server.url])
        .output()
        .unwrap();
    assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));

    // The key probe: a record for a stored snapshot resolves; once the snapshot is gone, 404.
    let key = Digest::of(b"a cache key");
    let record = serde_json::json!({
        "format": "envbuild.key.v1", "key": key.to_string(), "snapshot": id,
        "created": "2026-11-21T00:00:00Z", "builder": "test"
    });
    let url = format!("{}/v1/keys/{}", server.url, key.hex());
    let put = http().put(&url).bearer_auth(&server.write).body(record.to_string()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = http().get(&url).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let got: serde_json::Value = got.json_value().await;
    assert_eq!(got["snapshot"], id.as_str());
    std::fs::remove_file(server.store.join(layout::snapshot(&id.parse().unwrap()).as_str())).unwrap();
    let gone = http().get(&url).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(gone.text().await.unwrap().contains("no longer stored"));
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

/// 401, 403, 400, 409, 412 and 413, each with a public message, and nothing stored by any.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_and_store_nothing() {
    let server = Server::start();
    let raw = noise(300_000, 7);
    let digest = Digest::of(&raw);
    let frame = envbuild_cache::chunk::compress(&raw, 3).unwrap();
    let chunk_url = format!("{}/v1/chunks/{}", server.url, digest);
    let client = http();
    let put = |url: String, token: Option<&str>, body: Vec<u8>| {
        let mut request = client.put(url).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let cases: Vec<(&str, reqwest::Response, StatusCode)> = vec![
        ("no token", put(chunk_url.clone(), None, frame.clone()).await.unwrap(), StatusCode::UNAUTHORIZED),
        (
            "a token not in the file",
            put(chunk_url.clone(), Some("ebt_0000"), frame.clone()).await.unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a read token writing",
            put(chunk_url.clone(), Some(&server.read), frame.clone()).await.unwrap(),
            StatusCode::FORBIDDEN,
        ),
        (
            "a bad digest",
            put(format!("{}/v1/chunks/sha256:xyz", server.url), Some(&server.write), frame.clone())
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "path traversal in the object path",
            put(
                format!("{}/v1/objects/v1/..%2F..%2Fescaped", server.url),
                Some(&server.write),
                b"x".to_vec(),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "path traversal in a digest",
            put(format!("{}/v1/chunks/..%2F..%2Fescaped", server.url), Some(&server.write), frame.clone())
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a body not hashing to the digest",
            put(
                format!("{}/v1/chunks/{}", server.url, Digest::of(b"other")),
                Some(&server.write),
                frame.clone(),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a body that is not a zstd frame",
            put(chunk_url.clone(), Some(&server.write), raw.clone()).await.unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "an oversized body",
            put(chunk_url.clone(), Some(&server.write), vec![0u8; 20 * 1024 * 1024]).await.unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "a manifest before its chunks",
            {
                let (bytes, id) = manifest_for(&raw, &digest, frame.len() as u64);
                put(format!("{}/v1/snapshots/{id}", server.url), Some(&server.write), bytes).await.unwrap()
            },
            StatusCode::CONFLICT,
        ),
        (
            "a key record for a snapshot not stored",
            {
                let key = Digest::of(b"k");
                let record = serde_json::json!({
                    "format": "envbuild.key.v1", "key": key.to_string(), "snapshot": Digest::of(b"none").to_string(),
                    "created": "2026-11-21T00:00:00Z", "builder": "test"
                });
                put(
                    format!("{}/v1/keys/{key}", server.url),
                    Some(&server.write),
                    record.to_string().into_bytes(),
                )
                .await
                .unwrap()
            },
            StatusCode::CONFLICT,
        ),
    ];
    for (what, response, expected) in cases {
        assert_eq!(response.status(), expected, "{what}");
        if expected == StatusCode::UNAUTHORIZED {
            assert!(response.headers().contains_key("www-authenticate"), "{what}");
        }
        let body = response.json_value().await;
        let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "{what}: no public message in {body}");
        assert!(
            !message.contains(server.store.to_str().unwrap()),
            "{what}: the message shows a server path: {message}"
        );
    }
    assert!(server.stored().is_empty(), "refused writes stored {:?}", server.stored());
    let listing = client
        .get(format!("{}/v1/objects?prefix=../", server.url))
        .bearer_auth(&server.read)
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::BAD_REQUEST, "a listing prefix with `..`");
    assert!(!server.dir.path().join("escaped").exists());

    // The same chunk, well formed: stored once; a create-only repeat is a 412, a plain repeat 200.
    let ok = put(chunk_url.clone(), Some(&server.write), frame.clone()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(ok.headers()["etag"], format!("\"{}\"", digest.hex()).as_str());
    let again = put(chunk_url.clone(), Some(&server.write), frame.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let create_only =
        client.put(&chunk_url).bearer_auth(&server.write).header("if-none-match", "*").body(frame.clone());
    assert_eq!(create_only.send().await.unwrap().status(), StatusCode::PRECONDITION_FAILED);

    // Cached reads: immutable, and a matching If-None-Match is a 304 without a body.
    let got = client.get(&chunk_url).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(got.headers()["cache-control"], "max-age=31536000, immutable");
    assert_eq!(got.bytes().await.unwrap().as_ref(), frame.as_slice());
    let cached = client
        .get(&chunk_url)
        .bearer_auth(&server.read)
        .header("if-none-match", format!("\"{}\"", digest.hex()))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let head = client.head(&chunk_url).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], frame.len().to_string().as_str());

    // A store failure: a public message and a request id, no path of the server.
    let file = server.store.join(layout::chunk(&digest).as_str());
    std::fs::write(&file, vec![0u8; 17 * 1024 * 1024]).unwrap(); // larger than any chunk may be
    let failed = client.get(&chunk_url).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.headers().contains_key("x-request-id"));
    let text = failed.text().await.unwrap();
    assert!(text.contains("log has the details") && !text.contains(server.store.to_str().unwrap()), "{text}");
}

/// A one-chunk manifest for `raw`, as canonical JSON, and its id.
fn manifest_for(raw: &[u8], digest: &Digest, stored: u64) -> (Vec<u8>, String) {
    let manifest = envbuild_cache::manifest::Manifest {
        chunking: envbuild_cache::manifest::Chunking {
            algorithm: envbuild_cache::manifest::ChunkAlgorithm::FastCdc2020,
            avg: 1 << 20,
            max: 4 << 20,
            min: 256 << 10,
        },
        chunks: vec![envbuild_cache::manifest::ChunkRef {
            digest: *digest,
            size: raw.len() as u64,
            stored_size: stored,
        }],
        compression: envbuild_cache::manifest::Compression {
            algorithm: envbuild_cache::manifest::Zstd::Zstd,
            level: 3,
        },
        environment: None,
        format: envbuild_cache::manifest::FORMAT_V1.to_owned(),
        image_config: None,
        keys: None,
        size: raw.len() as u64,
        toc: Vec::new(),
        toc_ref: None,
        chunks_ref: None,
    };
    let (bytes, id) = manifest.encode().unwrap();
    (bytes, id.to_string())
}

/// A hundred clients fetch one snapshot's tar stream at once: all get the same bytes, the
/// ones `fetch --tar` gives from the store directly.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_fetches_are_byte_identical() {
    let server = Server::start();
    let id = import(&server, &rootfs(11));
    let direct = Command::new(bin())
        .env("ENVBUILD_STORE", &server.store)
        .args(["fetch", &id, "--tar", "-"])
        .output()
        .unwrap();
    assert!(direct.status.success());
    let want = Digest::of(&direct.stdout);
    let client = http();
    let url = format!("{}/v1/snapshots/{id}/rootfs.tar", server.url);
    let fetches: Vec<_> = (0..100)
        .map(|_| {
            let request = client.get(&url).bearer_auth(&server.read);
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                Digest::of(&response.bytes().await.unwrap())
            })
        })
        .collect();
    for fetch in fetches {
        assert_eq!(fetch.await.unwrap(), want);
    }
    // The metrics saw them.
    let metrics = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("envbuild_http_requests_total{route=\"/v1/snapshots/{id}/rootfs.tar\",method=\"GET\",status=\"200\"} 100"),
        "{metrics}"
    );
    assert_eq!(client.get(format!("{}/healthz", server.url)).send().await.unwrap().status(), StatusCode::OK);
}

/// Every operation the OpenAPI document describes is routed (none falls through to the
/// "no such route" answer), and the served document is the checked-in one.
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served() {
    let server = Server::start();
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let client = http();
    let served =
        client.get(format!("{}/v1/openapi.json", server.url)).bearer_auth(&server.read).send().await.unwrap();
    assert_eq!(served.json_value().await, doc);
    let hex = Digest::of(b"x").hex();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{path}", "v1/conformance/openapi-probe")
            .replace("{digest}", &hex)
            .replace("{id}", &hex)
            .replace("{key}", &hex);
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = client
                .request(method.clone(), format!("{}{concrete}", server.url))
                .bearer_auth(&server.write)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let body = response.text().await.unwrap();
            assert!(!body.contains("no_such_route"), "{method} {path} is not routed");
        }
    }
}

/// SIGTERM stops the server cleanly (exit 0): a download in flight finishes whole, new
/// connections are refused.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_download_in_flight_finish() {
    let mut server = Server::start();
    // Larger than the socket buffers can hold, so the server is still sending at SIGTERM.
    let id = import(&server, &write_tar(&[RawEntry::file("big", &noise(48 << 20, 31))]));
    let url = format!("{}/v1/snapshots/{id}/rootfs.tar", server.url);
    let mut response = http().get(&url).bearer_auth(&server.read).send().await.unwrap();
    let expected = response.content_length().unwrap();
    let mut received = response.chunk().await.unwrap().unwrap().len() as u64;
    let pid = rustix::process::Pid::from_raw(i32::try_from(server.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = http().get(format!("{}/healthz", server.url)).send().await;
    assert!(refused.is_err(), "a new connection was accepted while shutting down");
    while let Some(piece) = response.chunk().await.unwrap() {
        received += piece.len() as u64;
    }
    assert_eq!(received, expected, "the download in flight was cut off");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

/// A token added while the server runs works within a few seconds; an edit that breaks the
/// file keeps the tokens in force.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_added_while_running_take_effect() {
    let server = Server::start();
    let tokens = server.dir.path().join("tokens");
    let late = new_token(&tokens, "read");
    let url = format!("{}/v1/objects?prefix=v1/", server.url);
    let status = |token: String| {
        let url = url.clone();
        async move { http().get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    let mut accepted = false;
    for _ in 0..50 {
        if status(late.clone()).await == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the new token was not accepted within 5 s");
    std::fs::write(&tokens, format!("{}not a tokens line\n", std::fs::read_to_string(&tokens).unwrap()))
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(status(late).await, StatusCode::OK, "a broken tokens file dropped the tokens in force");
}

/// Two replicas over one S3 bucket (moto) share nothing but the bucket: a snapshot pushed
/// through one is fetched, byte-identical, through the other.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_over_one_bucket_serve_the_same_snapshots() {
    let Some(endpoint) = super::s3::moto_endpoint() else { return };
    let bucket = super::s3::bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let read = new_token(&tokens, "read");
    let write = new_token(&tokens, "write");
    let aws: Vec<(&str, String)> = vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    let (a, url_a) = spawn_serve(&bucket, &tokens, &aws, &dir.path().join("cache-a"));
    let (b, url_b) = spawn_serve(&bucket, &tokens, &aws, &dir.path().join("cache-b"));
    let mut replicas = Reaper(vec![a, b]);
    let local = dir.path().join("local");
    let tar = rootfs(41);
    let cli = |store: &str, token: &str| {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.env_remove("RUST_LOG")
            .env("ENVBUILD_STORE", store)
            .env("ENVBUILD_TOKEN", token)
            .env("XDG_CACHE_HOME", dir.path().join("client-cache"));
        cmd
    };
    let out = cli(local.to_str().unwrap(), "").args(["import", "-"]).write_stdin(tar).output().unwrap();
    let id = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    let push = cli(local.to_str().unwrap(), &write).args(["push", &id, "--to", &url_a]).output().unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let direct = cli(local.to_str().unwrap(), "").args(["fetch", &id, "--tar", "-"]).output().unwrap();
    let via_b =
        http().get(format!("{url_b}/v1/snapshots/{id}/rootfs.tar")).bearer_auth(&read).send().await.unwrap();
    assert_eq!(via_b.status(), StatusCode::OK);
    assert!(via_b.bytes().await.unwrap() == direct.stdout, "replica b served other bytes");
    // The registry API: a manifest from replica a (which computes the image record once and
    // stores it in the bucket), its layer by digest from replica b, which finds the record there.
    let hex = id.trim_start_matches("sha256:");
    let manifest = http()
        .get(format!("{url_a}/v2/snapshots/manifests/{hex}-tar"))
        .basic_auth("anyone", Some(&read))
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes().await.unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let via_b =
        http().get(format!("{url_b}/v2/snapshots/blobs/{layer}")).bearer_auth(&read).send().await.unwrap();
    assert_eq!(via_b.status(), StatusCode::OK);
    assert!(via_b.bytes().await.unwrap() == direct.stdout, "replica b served another layer");
    for child in &mut replicas.0 {
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        assert!(child.wait().unwrap().success());
    }
}

/// Kills the servers it holds when a test ends early.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(
            std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
            "chromium is not installed, but this run requires it: run the tests through scripts/test"
        );
        eprintln!("skipping: chromium is not installed");
    }
    found
}

fn headless(browser: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .output()
        .unwrap()
}

/// The snapshot browser in headless Chromium: the index lists both snapshots with their
/// keys; one snapshot's page shows its files; the diff shows the added file; the screenshot is
/// the page (the dark header bar over a light page, text drawn); without credentials, the
/// sign-in page.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_browser_renders_in_chromium() {
    let Some(browser) = chromium() else { return };
    let server = Server::start();
    let old = import(&server, &rootfs(21));
    let newer = {
        let mut entries = vec![
            RawEntry::dir("etc/"),
            RawEntry::file("etc/os-release", b"NAME=envbuild-test\n"),
            RawEntry::file("etc/added-by-install", b"new\n"),
            RawEntry::dir("opt/"),
            RawEntry::file("opt/tool.bin", &noise(5_000_000, 21)),
        ];
        entries.push(RawEntry::symlink("opt/tool", "tool.bin"));
        write_tar(&entries)
    };
    let new = import(&server, &newer);
    let dir = tempfile::tempdir().unwrap();
    let host = server.url.trim_start_matches("http://");
    let authed = format!("http://envbuild:{}@{host}", server.read);

    let dom = headless(browser, dir.path(), &["--dump-dom", &format!("{authed}/")]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_owned();
    assert!(dom.contains(&short(&old)) && dom.contains(&short(&new)), "the index does not list both: {dom}");
    assert!(dom.contains("Compare two snapshots"));

    let page = headless(browser, dir.path(), &["--dump-dom", &format!("{authed}/snapshots/{}", short(&new))]);
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("etc/added-by-install") && page.contains("opt/tool.bin"), "{page}");

    let diff = headless(browser, dir.path(), &["--dump-dom", &format!("{authed}/diff?a={old}&b={new}")]);
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.contains("Added (1)") && diff.contains("etc/added-by-install"), "{diff}");

    // Without credentials a browser is asked for them (headless Chromium cannot answer and
    // fails the load), over a page that says how to get a token.
    let anonymous = http().get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic "));
    assert!(anonymous.text().await.unwrap().contains("envbuild token new --role read"));

    let shot = dir.path().join("index.png");
    let out = headless(
        browser,
        dir.path(),
        &["--window-size=1280,900", &format!("--screenshot={}", shot.display()), &format!("{authed}/")],
    );
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1280, 900));
    let channels = info.line_size / info.width as usize;
    let pixel = |x: usize, y: usize| {
        let at = y * info.line_size + x * channels;
        (pixels[at], pixels[at + 1], pixels[at + 2])
    };
    // The header bar is #1d2330, the page below it #f6f7f9.
    let (r, g, b) = pixel(640, 10);
    assert!(r < 60 && g < 60 && b < 80, "the header is not dark: {:?}", (r, g, b));
    let (r, g, b) = pixel(1270, 880);
    assert!(r > 230 && g > 230 && b > 230, "the page is not light: {:?}", (r, g, b));
    // Text was drawn: many dark pixels in the table area.
    let dark =
        (60..400).flat_map(|y| (0..1280).map(move |x| (x, y))).filter(|&(x, y)| pixel(x, y).0 < 100).count();
    assert!(dark > 2000, "the page looks empty ({dark} dark pixels)");
}

/// Slow clients cannot hold the service: a head that does not arrive in time, or a body that
/// stops, ends its connection; one client's connections are bounded, and another client (and
/// `/healthz`) is served all the while.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_others_keep_being_served() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let write = new_token(&tokens, "write");
    let mut command = Command::new(bin());
    command
        .env_remove("RUST_LOG")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .args(["--store", dir.path().join("store").to_str().unwrap()])
        .args(["--header-timeout", "1s", "--body-timeout", "1s", "--max-connections-per-client", "32"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().trim_start_matches("http://").parse().unwrap();

    // 300 unfinished requests from one client.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(b"GET /v1/objects HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(stream);
    }
    // Another client: /healthz answers, promptly, while they wait.
    let healthz = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        answer
    };
    for _ in 0..3 {
        assert!(healthz().await.starts_with("HTTP/1.1 200"));
    }
    // Beyond its 32 connections the client's are closed at once; the 32 it holds are closed
    // once their head is a second late.
    let started = std::time::Instant::now();
    let mut cut = 0;
    for stream in &mut slow {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut buf)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            cut += 1;
        }
    }
    assert_eq!(cut, 300, "every unfinished request ends, the slow ones after the header timeout");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    // A body that stops: 408, and the connection closes.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/objects/v1/secrets/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {write}\r\nContent-Length: 100000\r\n\r\nabc"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(healthz().await.starts_with("HTTP/1.1 200"));
    let _ = child.kill();
    let _ = child.wait();
}
