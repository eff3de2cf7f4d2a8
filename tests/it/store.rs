//! The store commands through the binary: the stdout contract (the id alone on the last line),
//! exit codes, damage named on stderr, and a failed fetch leaving nothing behind.

use std::path::Path;

use assert_cmd::Command;
use envbuild_cache::testing::{RawEntry, noise, write_tar};

fn envbuild(store: &Path) -> Command {
    let mut cmd = Command::cargo_bin("envbuild").unwrap();
    cmd.env_remove("RUST_LOG").env("ENVBUILD_STORE", store);
    cmd
}

fn sample_tar(seed: u64) -> Vec<u8> {
    write_tar(&[
        RawEntry::dir("etc"),
        RawEntry::file("etc/hostname", b"envbuild\n"),
        RawEntry::file("opt/data.bin", &noise(6 * 1024 * 1024, seed)),
        RawEntry::symlink("usr-bin", "/usr/bin"),
    ])
}

/// Imports `tar` from stdin and returns the id, checking it is the last line of stdout.
fn import(store: &Path, tar: Vec<u8>) -> String {
    let out = envbuild(store).args(["import", "-"]).write_stdin(tar).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let id = stdout.lines().last().unwrap().to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imported stdin") && stderr.contains("already stored"), "{stderr}");
    id
}

#[test]
fn import_fetch_round_trip_and_listing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let tar = sample_tar(1);
    let tar_file = work.path().join("in.tar");
    std::fs::write(&tar_file, &tar).unwrap();
    let id = import(&store, tar.clone());
    // A file gives the same id as stdin.
    let out = envbuild(&store).arg("import").arg(&tar_file).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);

    let back = work.path().join("back.tar");
    envbuild(&store).args(["fetch", &id, "--tar"]).arg(&back).assert().success();
    assert_eq!(std::fs::read(&back).unwrap(), tar);
    let out = envbuild(&store).args(["fetch", &id[7..19], "--tar", "-"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, tar, "a unique prefix resolves and stdout gets the exact bytes");

    let dir = work.path().join("rootfs");
    envbuild(&store).args(["fetch", &id, "--to"]).arg(&dir).assert().success();
    assert_eq!(std::fs::read(dir.join("etc/hostname")).unwrap(), b"envbuild\n");
    assert_eq!(std::fs::read_link(dir.join("usr-bin")).unwrap(), Path::new("/usr/bin"));

    let out = envbuild(&store).args(["ls", "--json"]).output().unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing[0]["id"], id.as_str());
    assert_eq!(
        listing[0]["entries"], 4,
        "the entries of the stream: etc, etc/hostname, opt/data.bin, usr-bin"
    );

    let out = envbuild(&store).args(["inspect", &id, "--json"]).output().unwrap();
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["manifest"]["format"], "envbuild.snapshot.v2");
    assert_eq!(
        inspected["manifest"]["toc"].as_array().unwrap().len(),
        4,
        "the table of contents, read from its chunks"
    );
    envbuild(&store).args(["verify", "--read-data"]).assert().success();
}

#[test]
fn diff_names_added_removed_and_changed_files() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let old = import(
        &store,
        write_tar(&[
            RawEntry::file("keep", b"same"),
            RawEntry::file("gone", b"x"),
            RawEntry::file("edit", b"v1"),
        ]),
    );
    let new = import(
        &store,
        write_tar(&[
            RawEntry::file("edit", b"v2!"),
            RawEntry::file("keep", b"same"),
            RawEntry::file("new", b"n"),
        ]),
    );
    let out = envbuild(&store).args(["diff", &old, &new]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("+ new"), "{stdout}");
    assert!(stdout.contains("- gone"), "{stdout}");
    assert!(stdout.contains("~ edit (content; 2 B -> 3 B)"), "{stdout}");
    assert!(!stdout.contains("keep"), "{stdout}");
}

#[test]
fn damage_fails_verify_and_fetch_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let id = import(&store, sample_tar(2));
    // Delete one chunk file behind the store's back.
    let chunk = super::walk(&store.join("v1/chunks"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let digest = format!("sha256:{}", chunk.file_name().unwrap().to_string_lossy());
    std::fs::remove_file(&chunk).unwrap();

    let out = envbuild(&store).arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&digest) && stderr.contains("missing"), "{stderr}");

    let dir = work.path().join("rootfs");
    let out = envbuild(&store).args(["fetch", &id, "--to"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&digest));
    assert!(!dir.exists(), "a failed fetch must leave nothing at the target");
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "only the store remains: {leftovers:?}");

    let tar_out = work.path().join("out.tar");
    let out = envbuild(&store).args(["fetch", &id, "--tar"]).arg(&tar_out).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!tar_out.exists(), "a failed fetch must not leave a partial tar");
}

#[test]
fn usage_and_lookup_errors() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    envbuild(&store).args(["fetch", "abc"]).assert().code(2);
    // Commands that only read do not create a store where there is none.
    for args in [vec!["ls"], vec!["fetch", "deadbeefcafe", "--tar", "-"], vec!["verify"], vec!["gc"]] {
        let out = envbuild(&store).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr.contains("does not exist") && stderr.contains("hint:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("os error"), "{args:?}: {stderr}");
        assert!(!store.exists(), "`{args:?}` created the store");
    }
    import(&store, sample_tar(31));
    let out = envbuild(&store).args(["fetch", "deadbeefcafe", "--tar", "-"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = envbuild(&store).args(["import", "-"]).write_stdin(noise(5000, 1)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid tar stream"));
}

#[test]
fn gc_removes_only_unreferenced_chunks() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let keep = import(&store, sample_tar(3));
    let drop = import(&store, sample_tar(4));
    std::fs::remove_file(store.join("v1/snapshots").join(&drop[7..])).unwrap();
    let out = envbuild(&store).args(["gc", "--grace", "0s", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["removed_chunks"].as_u64().unwrap() >= 1, "{report}");
    envbuild(&store).args(["verify", "--read-data", &keep]).assert().success();
}

/// Runs `envbuild ARGS` with its stdout a pipe whose reader is already gone, as in
/// `envbuild ls | true`: the command must end quietly, with status 0, as `cat` does.
fn with_closed_stdout(store: &Path, args: &[&str]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("envbuild"))
        .env_remove("RUST_LOG")
        .env("ENVBUILD_STORE", store)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "`envbuild {}` with a closed stdout: {stderr}", args.join(" "));
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "`envbuild {}`: {stderr}",
        args.join(" ")
    );
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let a = import(&store, sample_tar(1));
    let b = import(&store, sample_tar(2));
    with_closed_stdout(&store, &["ls"]);
    with_closed_stdout(&store, &["ls", "--json"]);
    with_closed_stdout(&store, &["inspect", &a]);
    with_closed_stdout(&store, &["diff", "--json", &a, &b]);
    with_closed_stdout(&store, &["fetch", &a, "--tar", "-"]);
    // `key` of a repository whose base needs no engine (`FROM scratch`).
    let repo = crate::build::repo("basic");
    with_closed_stdout(&store, &["key", "--repo", repo.path().to_str().unwrap()]);
    with_closed_stdout(&store, &["key", "--json", "--repo", repo.path().to_str().unwrap()]);
}

/// The store's file for the first chunk of snapshot `id` (the one holding `etc/hostname`).
fn first_chunk_file(store: &Path, id: &str) -> std::path::PathBuf {
    let out = envbuild(store).args(["inspect", id, "--json"]).output().unwrap();
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = inspected["manifest"]["chunks"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    store.join("v1/chunks").join(&digest[..2]).join(&digest)
}

fn mkfifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// A FIFO where a chunk should be and a symlink where a manifest should be: reads do not hang
/// or follow them, and every command names the object and goes on with the rest.
#[test]
fn a_fifo_or_symlink_in_place_of_an_object_is_damage_named_quickly() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let id = import(&store, sample_tar(11));
    let other = import(&store, sample_tar(12));
    let chunk = first_chunk_file(&store, &id);
    mkfifo(&chunk);
    let chunk_name = chunk.file_name().unwrap().to_string_lossy().into_owned();
    for args in [vec!["fetch", id.as_str(), "--to", "out"], vec!["verify", "--read-data"], vec!["verify"]] {
        let out = envbuild(&store)
            .current_dir(work.path())
            .args(&args)
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&chunk_name) && stderr.contains("FIFO"), "{args:?}: {stderr}");
    }
    assert!(!work.path().join("out").exists());

    // A symlink in place of the other snapshot's manifest (pointing at a real manifest).
    let manifest = store.join("v1/snapshots").join(other.trim_start_matches("sha256:"));
    std::fs::remove_file(&manifest).unwrap();
    std::os::unix::fs::symlink(store.join("v1/snapshots").join(id.trim_start_matches("sha256:")), &manifest)
        .unwrap();
    let out = envbuild(&store).args(["ls"]).timeout(std::time::Duration::from_secs(20)).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&id) && stdout.contains(&format!("{other}  damaged")), "{stdout}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    let out = envbuild(&store).args(["verify"]).timeout(std::time::Duration::from_secs(20)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&format!("snapshot {other}")) && stderr.contains("symbolic link"), "{stderr}");
}

/// A truncated manifest and one over the size bound: `ls`, `verify` and `gc` report them and
/// go on with the rest of the store.
#[test]
fn one_bad_manifest_does_not_break_store_wide_commands() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let good = import(&store, sample_tar(21));
    let truncated = import(&store, sample_tar(22));
    let path = store.join("v1/snapshots").join(truncated.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = envbuild(&store).args(["ls", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = listing.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(rows.iter().any(|r| r["id"] == good.as_str() && r["damage"].is_null()), "{listing}");
    assert!(rows.iter().any(|r| r["id"] == truncated.as_str() && r["damage"].is_string()), "{listing}");
    // Over the bound (512 MiB): a sparse file, so the test writes nothing.
    let huge = store.join("v1/snapshots").join("ab".repeat(32));
    std::fs::File::create(&huge).unwrap().set_len(513 * 1024 * 1024).unwrap();
    let out = envbuild(&store).args(["verify"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&"ab".repeat(32)) && stderr.contains(&truncated), "{stderr}");
    let out = envbuild(&store).args(["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["damaged"].as_array().unwrap().len(), 2, "{report}");
    envbuild(&store).args(["fetch", &good, "--to"]).arg(work.path().join("out")).assert().success();
}

/// `envbuild` with its own cache home (where the staging journal lives).
fn envbuild_home(store: &Path, home: &Path) -> Command {
    let mut cmd = envbuild(store);
    cmd.env("XDG_CACHE_HOME", home);
    cmd
}

/// Every destination form refuses to overwrite without `--force`, and replaces with it; errors
/// say the OS's message once.
#[test]
fn fetch_refuses_to_overwrite_without_force() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let id = import(&store, sample_tar(41));
    let mut destinations =
        vec![("--tar", "out.tar", false), ("--to", "tree", true), ("--oci", "layout", true)];
    if std::process::Command::new("mkfs.ext4").arg("-V").output().is_ok() {
        destinations.push(("--ext4", "disk.img", false));
    }
    for (flag, name, is_dir) in destinations {
        let target = work.path().join(name);
        if is_dir {
            std::fs::create_dir_all(&target).unwrap();
            std::fs::write(target.join("old"), "old").unwrap();
        } else {
            std::fs::write(&target, "old").unwrap();
        }
        let out = envbuild(&store).args(["fetch", &id, flag]).arg(&target).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {stderr}");
        assert!(stderr.contains("--force"), "{flag}: {stderr}");
        assert!(stderr.matches("os error").count() <= 1, "{flag}: {stderr}");
        let old =
            if is_dir { std::fs::read(target.join("old")).unwrap() } else { std::fs::read(&target).unwrap() };
        assert_eq!(old, b"old", "{flag}: the destination changed");
        let out = envbuild(&store).args(["fetch", &id, flag]).arg(&target).arg("--force").output().unwrap();
        assert!(out.status.success(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            !target.join("old").exists() && std::fs::read(&target).map_or(true, |b| b != b"old"),
            "{flag}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".envbuild-"))
            .collect();
        assert!(leftovers.is_empty(), "{flag}: {leftovers:?}");
    }
    assert_eq!(std::fs::read(work.path().join("tree/etc/hostname")).unwrap(), b"envbuild\n");
}

/// Writes a snapshot whose stream is not a tar straight into a local store, as a hostile
/// writer could; returns its id.
fn plant_non_tar_snapshot(store: &Path) -> String {
    let garbage = noise(100_000, 7);
    let digest = envbuild_cache::Digest::of(&garbage);
    let stored = envbuild_cache::chunk::compress(&garbage, 3).unwrap();
    let chunk_path = store.join(envbuild_cache::layout::chunk(&digest).as_str());
    std::fs::create_dir_all(chunk_path.parent().unwrap()).unwrap();
    std::fs::write(&chunk_path, &stored).unwrap();
    let manifest = envbuild_cache::manifest::Manifest {
        format: envbuild_cache::manifest::FORMAT_V1.into(),
        chunking: envbuild_cache::manifest::Chunking::of(envbuild_cache::chunker::ChunkParams::default()),
        chunks: vec![envbuild_cache::manifest::ChunkRef {
            digest,
            size: garbage.len() as u64,
            stored_size: stored.len() as u64,
        }],
        chunks_ref: None,
        compression: envbuild_cache::manifest::Compression {
            algorithm: envbuild_cache::manifest::Zstd::Zstd,
            level: 3,
        },
        environment: None,
        image_config: None,
        keys: None,
        size: garbage.len() as u64,
        toc: Vec::new(),
        toc_ref: None,
    };
    let (bytes, id) = manifest.encode().unwrap();
    std::fs::write(store.join(envbuild_cache::layout::snapshot(&id).as_str()), bytes).unwrap();
    id.to_string()
}

#[test]
fn an_oci_layout_of_a_stream_that_is_not_a_tar_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    import(&store, sample_tar(51));
    let id = plant_non_tar_snapshot(&store);
    let layout = work.path().join("layout");
    let out = envbuild(&store).args(["fetch", &id, "--oci"]).arg(&layout).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a whole file system"), "{stderr}");
    assert!(!layout.exists());
}

/// Waits until a staging path of `target` appears beside it.
fn staging_appears(target: &Path) -> bool {
    let dir = target.parent().unwrap();
    let prefix = format!(".{}.envbuild-", target.file_name().unwrap().to_string_lossy());
    for _ in 0..400 {
        if std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".envbuild-") || n == "out" || n == "out.tar")
        .collect()
}

/// SIGTERM during a fetch removes what it staged; a fetch killed outright leaves its staging
/// behind, and the next `gc` removes it.
#[test]
fn an_interrupted_fetch_leaves_nothing_and_gc_sweeps_what_a_crash_left() {
    let work = tempfile::tempdir().unwrap();
    let (store, home, dest) = (work.path().join("store"), work.path().join("home"), work.path().join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let big: Vec<RawEntry> =
        (0..24).map(|i| RawEntry::file(&format!("opt/f{i}"), &noise(8 * 1024 * 1024, 100 + i))).collect();
    let id = import(&store, write_tar(&big));
    for (flag, name) in [("--to", "out"), ("--tar", "out.tar")] {
        for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
            let bin = assert_cmd::cargo::cargo_bin("envbuild");
            let mut child = std::process::Command::new(bin)
                .env("ENVBUILD_STORE", &store)
                .env("XDG_CACHE_HOME", &home)
                .args(["fetch", &id, flag])
                .arg(dest.join(name))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            assert!(staging_appears(&dest.join(name)), "{flag}: no staging seen");
            let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
            rustix::process::kill_process(pid, signal).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(130), "{flag} {signal:?}");
            assert!(leftovers(&dest).is_empty(), "{flag} {signal:?}: {:?}", leftovers(&dest));
        }
    }
    // Killed outright: the staging stays, noted in the journal; gc removes it.
    let bin = assert_cmd::cargo::cargo_bin("envbuild");
    let mut child = std::process::Command::new(bin)
        .env("ENVBUILD_STORE", &store)
        .env("XDG_CACHE_HOME", &home)
        .args(["fetch", &id, "--to"])
        .arg(dest.join("out"))
        .spawn()
        .unwrap();
    assert!(staging_appears(&dest.join("out")));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!leftovers(&dest).is_empty(), "a killed process runs no cleanup");
    let out = envbuild_home(&store, &home).args(["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));
}

/// `import` searches the stream for the store's secrets as a build does; `--no-secret-scan`
/// skips it.
#[test]
fn import_refuses_a_stream_holding_a_secret_unless_told_not_to_look() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    import(&store, sample_tar(71));
    let key = work.path().join("master.key");
    let value = "tok_0123456789abcdefXYZ";
    let set = envbuild(&store)
        .env("ENVBUILD_MASTER_KEY", &key)
        .args(["secrets", "set", "API_TOKEN", "--scope", "workspace"])
        .write_stdin(value)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let leaky = write_tar(&[
        RawEntry::dir("etc"),
        RawEntry::file("etc/app.conf", format!("token = {value}\n").as_bytes()),
    ]);
    let out = envbuild(&store)
        .env("ENVBUILD_MASTER_KEY", &key)
        .args(["import", "-"])
        .write_stdin(leaky.clone())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("API_TOKEN") && stderr.contains("/etc/app.conf") && !stderr.contains(value),
        "{stderr}"
    );
    let out = envbuild(&store)
        .env("ENVBUILD_MASTER_KEY", &key)
        .args(["import", "-", "--no-secret-scan"])
        .write_stdin(leaky)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Writes a key record for `snapshot` of `repository`, made `hours_ago`.
fn key_record(store: &Path, n: u8, snapshot: &str, repository: &str, hours_ago: u64) {
    let key = envbuild_cache::Digest::of(&[n, 0xee]);
    let created = std::time::SystemTime::now() - std::time::Duration::from_secs(hours_ago * 3600);
    let record = serde_json::json!({
        "format": "envbuild.key.v1", "key": key.to_string(), "snapshot": snapshot,
        "created": humantime::format_rfc3339_seconds(created).to_string(), "builder": "test",
        "info": { "repository": repository },
    });
    let path = store.join(envbuild_cache::layout::key(&key).as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, record.to_string()).unwrap();
}

fn set_ref(store: &Path, name: &str, snapshot: &str) {
    let path = store.join("v1/refs").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let record = serde_json::json!({ "format": "envbuild.ref.v1", "snapshot": snapshot, "updated": "2026-11-30T00:00:00Z" });
    std::fs::write(path, record.to_string()).unwrap();
}

fn snapshots_in(store: &Path) -> Vec<String> {
    let out = envbuild(store).args(["ls", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> =
        rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// `prune` keeps exactly what its rules say, per repository, keeps what a ref names, frees the
/// bytes it announced; `rm` refuses a snapshot a ref names unless forced.
#[test]
fn prune_keeps_exactly_what_its_rules_say_and_rm_respects_refs() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // Seeds differ in more than their lowest bit (`noise` ignores it).
    let ids: Vec<String> = (0..6).map(|i| import(&store, sample_tar(80 + 2 * i))).collect();
    // repo-a: 0 (1 h), 1 (30 h), 2 (50 h, named by a ref); repo-b: 3 (2 h), 4 (80 h); 5 imported.
    for (n, (id, repository, hours)) in [
        (&ids[0], "repo-a", 1),
        (&ids[1], "repo-a", 30),
        (&ids[2], "repo-a", 50),
        (&ids[3], "repo-b", 2),
        (&ids[4], "repo-b", 80),
    ]
    .into_iter()
    .enumerate()
    {
        key_record(&store, u8::try_from(n).unwrap(), id, repository, hours);
    }
    set_ref(&store, "release", &ids[2]);
    let out = envbuild(&store).args(["prune", "--keep-last", "1", "--dry-run", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = |side: &str| {
        let mut ids: Vec<String> = report["plan"][side]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut going = vec![ids[1].clone(), ids[4].clone()];
    going.sort();
    assert_eq!(listed("remove"), going);
    let freed = report["freed_bytes"].as_u64().unwrap();
    assert!(freed > 6_000_000, "two snapshots of 6 MB of their own: {freed}");
    assert_eq!(snapshots_in(&store).len(), 6, "a dry run removes nothing");

    let before = du(&store);
    let out = envbuild(&store).args(["prune", "--keep-last", "1", "--grace", "0s"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut kept = vec![ids[0].clone(), ids[2].clone(), ids[3].clone(), ids[5].clone()];
    kept.sort();
    assert_eq!(snapshots_in(&store), kept);
    assert!(before - du(&store) >= freed, "freed {} of the {freed} announced", before - du(&store));
    envbuild(&store).args(["verify", "--read-data"]).assert().success();

    // rm: a ref's snapshot needs --force, which removes the ref too.
    let out = envbuild(&store).args(["rm", &ids[2]]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`release`") && stderr.contains("--force"), "{stderr}");
    envbuild(&store).args(["rm", &ids[2], &ids[5], "--force"]).assert().success();
    assert_eq!(snapshots_in(&store).len(), 2);
    assert!(!store.join("v1/refs/release").exists());
    envbuild(&store).args(["verify"]).assert().success();
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}
