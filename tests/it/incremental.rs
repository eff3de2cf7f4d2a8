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
