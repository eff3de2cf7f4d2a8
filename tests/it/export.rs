//! `fetch --oci` and `fetch --ext4` checked by the tools that consume them: skopeo copies the
//! layout (verifying every digest) and its layer is the snapshot's tar byte for byte; e2fsck
//! finds the disk image clean, with contents, ownership and modes kept and the headroom asked
//! for.

use std::path::Path;
use std::process::Command as Process;

use envbuild_cache::testing::{RawEntry, write_tar};

use super::build::envbuild;

/// `tool` when it is installed; a failure when this run requires it (scripts/test installs it).
pub fn tool(name: &str) -> Option<()> {
    let found =
        Process::new("sh").args(["-c", &format!("command -v {name}")]).output().unwrap().status.success()
            || Path::new("/usr/sbin").join(name).exists();
    if !found {
        assert!(
            std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
            "`{name}` is not installed, but this run requires it: run the tests through scripts/test"
        );
        eprintln!("skipping: `{name}` is not installed");
        return None;
    }
    Some(())
}

/// Runs `cmd`, which must succeed; its stdout.
pub fn run(cmd: &mut Process) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 3 MiB that do not compress away.
fn big_file() -> Vec<u8> {
    (0..3u32 * 1024 * 1024).map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect()
}

fn sample() -> Vec<u8> {
    let mut owned = RawEntry::file("home/agent/notes.txt", b"owned by agent\n");
    (owned.uid, owned.gid, owned.mode) = (1000, 1000, 0o640);
    let mut tool = RawEntry::file("usr/local/bin/tool", b"#!/bin/sh\necho tool\n");
    tool.mode = 0o755;
    let big = big_file();
    write_tar(&[
        RawEntry::dir("etc"),
        RawEntry::file("etc/hostname", b"envbuild\n"),
        RawEntry::dir("home"),
        RawEntry::dir("home/agent"),
        owned,
        RawEntry::dir("usr"),
        RawEntry::dir("usr/local"),
        RawEntry::dir("usr/local/bin"),
        tool,
        RawEntry::symlink("usr/local/bin/t", "tool"),
        RawEntry::file("opt/data.bin", &big),
    ])
}

fn import(store: &Path) -> String {
    let out = envbuild(store).args(["import", "-"]).write_stdin(sample()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned()
}

#[test]
fn an_oci_layout_that_skopeo_copies_with_the_snapshot_as_its_layer() {
    let Some(()) = tool("skopeo") else { return };
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let id = import(&store);
    let tar = work.path().join("rootfs.tar");
    run(Process::new(assert_cmd::cargo::cargo_bin("envbuild"))
        .env("ENVBUILD_STORE", &store)
        .args(["fetch", &id, "--tar"])
        .arg(&tar));
    let layout = work.path().join("layout");
    let out =
        envbuild(&store).args(["fetch", &id, "--oci-ref", "dev", "--oci"]).arg(&layout).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let inspect: serde_json::Value = serde_json::from_str(&run(Process::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:dev", layout.display()))))
    .unwrap();
    assert_eq!(inspect["os"], "linux");
    // skopeo checks every blob against its digest while copying.
    let copied = work.path().join("copied");
    run(Process::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:dev", layout.display()))
        .arg(format!("dir:{}", copied.display())));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let digest = layers[0]["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert!(
        std::fs::read(copied.join(digest)).unwrap() == std::fs::read(&tar).unwrap(),
        "the layer is not the snapshot's tar"
    );

    // An existing destination is refused and left alone.
    let again = envbuild(&store).args(["fetch", &id, "--oci"]).arg(&layout).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
}

#[test]
fn an_ext4_image_that_e2fsck_finds_clean_with_ownership_and_headroom() {
    let (Some(()), Some(())) = (tool("e2fsck"), tool("debugfs")) else { return };
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let id = import(&store);
    let image = work.path().join("rootfs.ext4");
    let out =
        envbuild(&store).args(["fetch", &id, "--headroom", "50", "--ext4"]).arg(&image).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    run(Process::new("e2fsck").args(["-f", "-n"]).arg(&image));
    let debugfs = |request: &str| run(Process::new("debugfs").args(["-R", request]).arg(&image));
    assert_eq!(debugfs("cat /etc/hostname").lines().last(), Some("envbuild"));
    let stat = debugfs("stat /home/agent/notes.txt");
    assert!(
        stat.contains("User:  1000") && stat.contains("Group:  1000") && stat.contains("Mode:  0640"),
        "{stat}"
    );
    let stat = debugfs("stat /usr/local/bin/tool");
    assert!(stat.contains("Mode:  0755"), "{stat}");
    assert!(debugfs("stat /usr/local/bin/t").contains("Type: symlink"));
    let dumped = work.path().join("data.bin");
    debugfs(&format!("dump /opt/data.bin {}", dumped.display()));
    let big = big_file();
    assert!(std::fs::read(&dumped).unwrap() == big, "/opt/data.bin differs");

    // Headroom: at least half of what the files use is still free.
    let header = run(Process::new("dumpe2fs").arg("-h").arg(&image));
    let field = |name: &str| -> u64 {
        header.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().parse().unwrap()
    };
    let (blocks, free) = (field("Block count:"), field("Free blocks:"));
    assert!(free * 3 >= blocks, "{free} of {blocks} blocks free; 50% headroom was asked for");
}
