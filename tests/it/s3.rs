//! The binary against S3 (moto): every store command works on `s3://` directly, push and pull
//! copy between stores, and a push killed at any moment leaves no visible snapshot that
//! references a missing chunk, and converges when run again.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use assert_cmd::Command;
use envbuild_cache::store::s3::{self as s3store, S3Options};
use envbuild_cache::testing::{RawEntry, noise, write_tar};

/// The moto endpoint, or `None` when it is not running (then the test is skipped, unless the
/// run requires servers, as CI's does).
pub fn moto_endpoint() -> Option<String> {
    if let Ok(endpoint) = std::env::var("ENVBUILD_TEST_MOTO") {
        return Some(endpoint);
    }
    assert!(
        std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
        "ENVBUILD_TEST_MOTO is not set, but this run requires the servers: run the tests through scripts/test"
    );
    eprintln!("skipping: ENVBUILD_TEST_MOTO is not set (scripts/test starts moto)");
    None
}

/// A fresh bucket on moto; returns its `s3://` URL with a prefix.
pub async fn bucket(endpoint: &str) -> String {
    let url = format!("s3://envbuild-it-{:012x}/env", rand_u64() & 0xffff_ffff_ffff);
    let options = S3Options {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
        ..S3Options::default()
    };
    s3store::create_bucket(&url, &options).await.unwrap();
    url
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

/// `envbuild` with the AWS environment pointing at moto and a private cache directory.
fn envbuild(endpoint: &str, home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("envbuild").unwrap();
    aws_env(&mut cmd, endpoint, home);
    cmd
}

fn aws_env(cmd: &mut Command, endpoint: &str, home: &Path) {
    cmd.env_remove("RUST_LOG")
        .env_remove("ENVBUILD_STORE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("XDG_CACHE_HOME", home.join("cache"));
}

fn image(seed: u64) -> Vec<u8> {
    write_tar(&[
        RawEntry::dir("opt"),
        RawEntry::file("opt/a.bin", &noise(10 * 1024 * 1024, seed)),
        RawEntry::file("opt/b.bin", &noise(22 * 1024 * 1024, seed + 1)),
    ])
}

fn last_line(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_command_works_on_s3() {
    let Some(endpoint) = moto_endpoint() else { return };
    let home = tempfile::tempdir().unwrap();
    let url = bucket(&endpoint).await;
    let run = |args: &[&str]| {
        envbuild(&endpoint, home.path()).arg("--store").arg(&url).args(args).output().unwrap()
    };
    let id = last_line(
        &envbuild(&endpoint, home.path())
            .args(["--store", &url, "import", "-"])
            .write_stdin(image(1))
            .output()
            .unwrap(),
    );
    let other = last_line(
        &envbuild(&endpoint, home.path())
            .args(["--store", &url, "import", "-"])
            .write_stdin(image(9))
            .output()
            .unwrap(),
    );
    let listing: serde_json::Value = serde_json::from_slice(&run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 2);
    assert!(run(&["inspect", &id]).status.success());
    assert!(run(&["diff", &id, &other]).status.success());
    assert!(run(&["verify", "--read-data"]).status.success());
    let out = run(&["fetch", &id, "--tar", "-"]);
    assert!(out.stdout == image(1), "the tar from S3 differs");
    let dir = home.path().join("rootfs");
    assert!(run(&["fetch", &id, "--to", dir.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(dir.join("opt/a.bin")).unwrap(), noise(10 * 1024 * 1024, 1));
    let gc = run(&["gc", "--dry-run", "--grace", "0s", "--json"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    // The second fetch came from the local chunk cache (a directory of this store's own).
    let cache = home.path().join("cache/envbuild/remote-cache");
    let own: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("v1/chunks").is_dir())
        .collect();
    assert_eq!(own.len(), 1, "one cache directory for the one store in {}", cache.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_fails_before_any_work_with_a_hint() {
    let Some(endpoint) = moto_endpoint() else { return };
    let home = tempfile::tempdir().unwrap();
    let out = envbuild(&endpoint, home.path())
        .args(["--store", "s3://no-such-bucket-anywhere", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist") && stderr.contains("hint:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_copy_between_local_and_s3() {
    let Some(endpoint) = moto_endpoint() else { return };
    let home = tempfile::tempdir().unwrap();
    let url = bucket(&endpoint).await;
    let local = home.path().join("local");
    let other = home.path().join("other");
    let local_cmd = |store: &Path| {
        let mut cmd = envbuild(&endpoint, home.path());
        cmd.arg("--store").arg(store);
        cmd
    };
    let id = last_line(&local_cmd(&local).args(["import", "-"]).write_stdin(image(2)).output().unwrap());
    let pushed = local_cmd(&local).args(["push", &id, "--to", &url]).output().unwrap();
    assert_eq!(last_line(&pushed), id);
    // A first push sends every chunk: "sent N of N chunks".
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    let counts: Vec<&str> =
        stderr.split("sent ").nth(1).unwrap().split(" chunks").next().unwrap().split(" of ").collect();
    assert_eq!(counts[0], counts[1], "{stderr}");
    let pulled = local_cmd(&other).args(["pull", &id[7..20], "--from", &url]).output().unwrap();
    assert_eq!(last_line(&pulled), id);
    let out = local_cmd(&other).args(["fetch", &id, "--tar", "-"]).output().unwrap();
    assert!(out.stdout == image(2));
}

/// SIGKILL `envbuild push` at seeded random moments: the destination never shows a snapshot
/// with a missing chunk, verifies clean, and a second push converges on the same id.
#[tokio::test(flavor = "multi_thread")]
async fn pushes_killed_at_random_moments_leave_the_destination_consistent() {
    let Some(endpoint) = moto_endpoint() else { return };
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    let import = envbuild(&endpoint, home.path())
        .arg("--store")
        .arg(&local)
        .args(["import", "-"])
        .write_stdin(image(3))
        .output()
        .unwrap();
    let id = last_line(&import);
    let push = |url: &str| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("envbuild"));
        cmd.arg("--store").arg(&local).args(["push", &id, "--to", url, "-j", "2"]);
        cmd.env_remove("RUST_LOG")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("XDG_CACHE_HOME", home.path().join("cache"));
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    };
    // How long an uninterrupted push takes (the median of three), to spread the kills over it.
    let mut fulls = Vec::new();
    for _ in 0..3 {
        let scratch = bucket(&endpoint).await;
        let started = Instant::now();
        assert!(push(&scratch).status().unwrap().success());
        fulls.push(started.elapsed());
    }
    fulls.sort();
    let full = fulls[1];
    let mut unpublished = 0;
    let mut seed: u64 = 0x6b69_6c6c;
    for run in 0..20 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let delay = full * u32::try_from((seed >> 33) % 1000).unwrap() / 1000;
        let url = bucket(&endpoint).await;
        let mut child = push(&url).spawn().unwrap();
        tokio::time::sleep(delay).await;
        child.kill().ok();
        child.wait().unwrap();
        let verify =
            envbuild(&endpoint, home.path()).args(["--store", &url, "verify", "--json"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert_eq!(report["ok"], true, "run {run} (killed after {delay:?}): {report}");
        if report["snapshots"] == 0 {
            unpublished += 1;
        }
        let repush = push(&url).output().unwrap();
        assert!(repush.status.success(), "run {run}: the second push failed");
        let verify = envbuild(&endpoint, home.path())
            .args(["--store", &url, "verify", "--read-data", &id])
            .output()
            .unwrap();
        assert!(verify.status.success(), "run {run}: {}", String::from_utf8_lossy(&verify.stderr));
    }
    eprintln!(
        "kill test: 20 runs; {unpublished} were killed before the snapshot was published (a full push takes {full:?})"
    );
    assert!(unpublished >= 5, "only {unpublished} kills landed before publication: the test is not testing");
}
