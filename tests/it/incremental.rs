//! Incremental builds against the real engine: keys that move only with what the build reads,
//! and installs that start from the last checkpoint (DESIGN §3).

use std::path::Path;

use super::build::{commit, engine, envbuild, git, json};

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    RUN mkdir -p /etc /tmp && echo 'root:x:0:0::/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group && chmod 1777 /tmp\n\
    COPY package.json /opt/package.json\nENV PATH=/bin\n";

/// "npm install", as far as a test needs: `node_modules/` made once (with a mark of the first
/// run), and one file per dependency line of `package-lock.json` added to it.
const INSTALL: &str = "if [ ! -d node_modules ]; then mkdir node_modules && echo first-install > node_modules/.first; fi; \
    while read -r dep; do [ -n \"$dep\" ] && echo \"$dep\" > \"node_modules/$dep\"; done < package-lock.json; echo installed";

/// A repository whose build context is its root (`..`), with `.git`, a lock file, sources.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(".cursor")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    let config =
        serde_json::json!({ "build": { "dockerfile": "Dockerfile", "context": ".." }, "install": INSTALL });
    std::fs::write(root.join(".cursor/environment.json"), config.to_string()).unwrap();
    std::fs::write(root.join(".cursor/Dockerfile"), DOCKERFILE).unwrap();
    std::fs::copy("/bin/busybox", root.join("busybox")).unwrap();
    std::fs::write(root.join("package.json"), "{\"name\": \"app\"}\n").unwrap();
    std::fs::write(root.join("package-lock.json"), "left-pad\n").unwrap();
    std::fs::write(root.join("src/app.ts"), "export const a = 1;\n").unwrap();
    std::fs::write(root.join("src/old.ts"), "export const old = 1;\n").unwrap();
    git(root, &["init", "-q"]);
    commit(root, "first");
    dir
}

fn keys(store: &Path, repo: &Path) -> serde_json::Value {
    json(&envbuild(store).args(["key", "--json", "--repo"]).arg(repo).output().unwrap())
}

fn build(store: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    json(&envbuild(store).args(["build", "--json", "--repo"]).arg(repo).args(extra).output().unwrap())
}

/// The files of the snapshot under `dir/`, with their contents.
fn files(store: &Path, id: &str, dir: &str) -> std::collections::BTreeMap<String, String> {
    let out = envbuild(store).args(["fetch", id, "--tar", "-"]).output().unwrap();
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let mut found = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if let Some(rest) = path.strip_prefix(dir).filter(|r| !r.is_empty() && !r.ends_with('/')) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            found.insert(rest.to_owned(), text);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_move_only_with_what_the_build_and_install_read() {
    let repo = repository();
    let store = tempfile::tempdir().unwrap();
    let first = keys(store.path(), repo.path());
    assert!(
        first["inputs"]["system"]["context"].as_object().unwrap().keys().all(|p| !p.starts_with(".git")),
        "{first}"
    );

    // A source-only commit: neither key moves, although the context is the repository root
    // and `.git/` changed.
    std::fs::write(repo.path().join("src/app.ts"), "export const a = 2;\n").unwrap();
    commit(repo.path(), "source");
    let source = keys(store.path(), repo.path());
    assert_eq!(source["system_key"], first["system_key"]);
    assert_eq!(source["env_key"], first["env_key"]);

    // The lock file: the env key moves, the system key does not (no COPY reads it).
    std::fs::write(repo.path().join("package-lock.json"), "left-pad\nis-number\n").unwrap();
    commit(repo.path(), "lock");
    let lock = keys(store.path(), repo.path());
    assert_eq!(lock["system_key"], first["system_key"]);
    assert_ne!(lock["env_key"], first["env_key"]);
    assert!(lock["inputs"]["env"]["inputs_from"].as_str().unwrap().contains("dependency manifest"), "{lock}");

    // A file the Dockerfile copies: both move.
    std::fs::write(repo.path().join("package.json"), "{\"name\": \"app2\"}\n").unwrap();
    commit(repo.path(), "manifest");
    let copied = keys(store.path(), repo.path());
    assert_ne!(copied["system_key"], first["system_key"]);

    // `.cursor/envbuild.json` narrows the inputs; `--input` overrides it.
    std::fs::write(
        repo.path().join(".cursor/envbuild.json"),
        "{ // envbuild's own settings\n \"inputs\": [\"src/**\"] }",
    )
    .unwrap();
    let narrowed = keys(store.path(), repo.path());
    let inputs: Vec<&String> = narrowed["inputs"]["env"]["inputs"].as_object().unwrap().keys().collect();
    assert_eq!(inputs, ["src/app.ts", "src/old.ts"]);
    let flagged = json(
        &envbuild(store.path())
            .args(["key", "--json", "--input", "package*.json", "--repo"])
            .arg(repo.path())
            .output()
            .unwrap(),
    );
    assert!(flagged["inputs"]["env"]["inputs_from"].as_str().unwrap().starts_with("--input"), "{flagged}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_change_installs_from_the_last_checkpoint() {
    let Some(_engine) = engine().await else { return };
    let repo = repository();
    let store = tempfile::tempdir().unwrap();
    let first = build(store.path(), repo.path(), &[]);
    let first_id = first["id"].as_str().unwrap().to_owned();

    // A source-only commit is a hit.
    std::fs::write(repo.path().join("src/app.ts"), "export const a = 2;\n").unwrap();
    commit(repo.path(), "source");
    assert_eq!(build(store.path(), repo.path(), &[])["hit"], true);

    // A new dependency, and a source file deleted: a miss that starts from the parent: the
    // first install's mark stays, the new dependency is added, the deleted file is gone.
    std::fs::write(repo.path().join("package-lock.json"), "left-pad\nis-number\n").unwrap();
    std::fs::remove_file(repo.path().join("src/old.ts")).unwrap();
    commit(repo.path(), "dependency");
    let second = build(store.path(), repo.path(), &[]);
    assert_eq!(second["hit"], false);
    let id = second["id"].as_str().unwrap();
    let modules = files(store.path(), id, "workspace/node_modules/");
    assert_eq!(
        modules.get(".first").map(String::as_str),
        Some("first-install\n"),
        "not built from the parent: {modules:?}"
    );
    assert!(modules.contains_key("is-number"), "{modules:?}");
    let sources = files(store.path(), id, "workspace/src/");
    assert!(sources.contains_key("app.ts") && !sources.contains_key("old.ts"), "{sources:?}");
    let explained = envbuild(store.path()).args(["explain", &first_id, id]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&explained.stderr).contains(&format!("incremental from {}", &first_id[..19])),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );

    // `--clean` starts from the system image alone: the mark is made again.
    std::fs::write(repo.path().join("package-lock.json"), "left-pad\nis-number\nis-odd\n").unwrap();
    commit(repo.path(), "clean");
    let clean = build(store.path(), repo.path(), &["--clean"]);
    let modules = files(store.path(), clean["id"].as_str().unwrap(), "workspace/node_modules/");
    assert!(modules.contains_key(".first") && modules.contains_key("is-odd"));
    // The mark was written by this install: compare with the first one's file set.
    let explained =
        envbuild(store.path()).args(["explain", id, clean["id"].as_str().unwrap()]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&explained.stderr).contains("clean"),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_parent_falls_back_to_a_clean_build() {
    let Some(engine) = engine().await else { return };
    let repo = repository();
    let store = tempfile::tempdir().unwrap();
    let first = build(store.path(), repo.path(), &[]);
    let first_id = first["id"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    // The parent's manifest is damaged, and its checkpoint image is gone.
    std::fs::write(store.path().join("v1/snapshots").join(&first_id), b"{ damaged").unwrap();
    engine.remove_image(&format!("envbuild-checkpoint:{first_id}")).await.unwrap();
    std::fs::write(repo.path().join("package-lock.json"), "left-pad\nis-number\n").unwrap();
    commit(repo.path(), "dependency");
    let out = envbuild(store.path()).args(["build", "--json", "--repo"]).arg(repo.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used") && stderr.contains("building clean"), "{stderr}");
    let report = json(&out);
    assert!(
        files(store.path(), report["id"].as_str().unwrap(), "workspace/node_modules/")
            .contains_key("is-number")
    );
}

/// Install for the splice test: the first run lays out a tree; the second replaces a directory
/// (`rm -rf` then `mkdir`: an opaque directory in the layer), adds, removes, changes modes and
/// contents, outside `/workspace` too.
const RESHAPING_INSTALL: &str = "if [ -f /opt/state/second ]; then \
      rm -rf node_modules/a && mkdir -p node_modules/a/c && echo c > node_modules/a/c/file; \
      echo new > node_modules/new; rm -f node_modules/gone; chmod 600 node_modules/keep; \
      mkdir -p deep/x/y && echo z > deep/x/y/z; ln -s ../keep node_modules/link; \
      echo changed >> /opt/tool.conf; echo second; \
    else \
      mkdir -p node_modules/a/b /opt/state && echo b > node_modules/a/b/file && echo g > node_modules/gone; \
      echo k > node_modules/keep && echo conf > /opt/tool.conf && touch /opt/state/second; echo first; \
    fi";

/// What a container has that its layers do not (Docker's init layer), whose times differ
/// between any two containers.
fn container_made(path: &str) -> bool {
    [".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf", "dev", "proc", "sys", "etc/mtab"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_build_stores_exactly_what_a_full_export_would() {
    let Some(engine) = engine().await else { return };
    let repo = repository();
    let config = serde_json::json!({ "build": { "dockerfile": "Dockerfile", "context": ".." }, "install": RESHAPING_INSTALL });
    std::fs::write(repo.path().join(".cursor/environment.json"), config.to_string()).unwrap();
    commit(repo.path(), "reshaping install");
    let store = tempfile::tempdir().unwrap();
    build(store.path(), repo.path(), &[]);

    std::fs::write(repo.path().join("package-lock.json"), "left-pad\nis-number\n").unwrap();
    std::fs::write(repo.path().join("src/app.ts"), "export const a = 3;\n").unwrap();
    std::fs::remove_file(repo.path().join("src/old.ts")).unwrap();
    commit(repo.path(), "dependency");
    // The file system is small enough that exporting it whole is cheaper: ask for the splice.
    let out = envbuild(store.path())
        .env("ENVBUILD_EXPORT", "changes")
        .args(["build", "--json", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("changed paths read from the engine"), "not spliced onto the parent: {stderr}");
    let spliced = json(&out)["id"].as_str().unwrap().to_owned();

    // The same file system exported whole: a container of the checkpoint image committed from
    // the install container, imported as a snapshot.
    let checkpoint = format!("envbuild-checkpoint:{}", spliced.trim_start_matches("sha256:"));
    let spec = envbuild_builder::engine::ContainerSpec {
        image: checkpoint,
        cmd: vec!["true".into()],
        ..Default::default()
    };
    let container = engine.create_container(&spec).await.unwrap();
    let export = engine.export(&container).await.unwrap();
    let pieces: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(export).await.unwrap();
    let tar: Vec<u8> = pieces.concat();
    engine.remove_container(&container).await.unwrap();
    let imported = envbuild(store.path()).args(["import", "-"]).write_stdin(tar).output().unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let whole = String::from_utf8_lossy(&imported.stdout).lines().last().unwrap().trim().to_owned();

    // Modification times included: every directory the install touched must have its new one.
    let diff =
        json(&envbuild(store.path()).args(["diff", "--json", "--mtime", &spliced, &whole]).output().unwrap());
    let mut differences: Vec<String> = Vec::new();
    for side in ["added", "removed", "changed"] {
        for entry in diff["diff"][side].as_array().unwrap() {
            let path = entry["path"].as_str().unwrap();
            // The init layer also touches the directory that holds its files.
            let init_parent = path == "etc" && entry["aspects"] == serde_json::json!(["mtime"]);
            if !container_made(path) && !init_parent {
                differences.push(format!("{side} {path} {}", entry["aspects"]));
            }
        }
    }
    assert!(differences.is_empty(), "the spliced snapshot differs from the full export: {differences:#?}");
    // And the install's work is all there.
    let modules = files(store.path(), &spliced, "workspace/node_modules/");
    assert_eq!(modules.get("a/c/file").map(String::as_str), Some("c\n"));
    assert!(!modules.contains_key("a/b/file") && !modules.contains_key("gone"), "{modules:?}");
    assert!(files(store.path(), &spliced, "workspace/deep/").contains_key("x/y/z"));
}
