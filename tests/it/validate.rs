//! `envbuild validate`, `schema` and `init` through the binary, on the fixture configs.

use std::path::Path;

use assert_cmd::Command;

fn envbuild() -> Command {
    let mut cmd = Command::cargo_bin("envbuild").unwrap();
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("RUST_LOG");
    cmd
}

/// Runs `validate` on a fixture with the fixtures folder as the repository root, so `..`
/// paths resolve the same wherever the checkout is.
fn validate(fixture: &Path) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let relative = fixture.strip_prefix(root).unwrap();
    let out =
        envbuild().args(["validate", "--repo", "fixtures/environments"]).arg(relative).output().unwrap();
    assert!(out.stdout.is_empty(), "human output goes to stderr");
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap(), stderr)
}

#[test]
fn valid_fixtures_pass() {
    insta::glob!("../../fixtures/environments/valid", "*.json", |path| {
        let (code, stderr) = validate(path);
        assert_eq!(code, 0, "{}:\n{stderr}", path.display());
        insta::assert_snapshot!(stderr);
    });
}

#[test]
fn invalid_fixtures_fail_with_located_diagnostics() {
    insta::glob!("../../fixtures/environments/invalid", "*.json", |path| {
        let (code, stderr) = validate(path);
        assert_eq!(code, 1, "{}:\n{stderr}", path.display());
        let name = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string();
        // Every problem line names the file; those with a position carry LINE:COL and a JSON path.
        for line in stderr.lines().filter(|l| !l.starts_with("  hint:") && !l.starts_with('`')) {
            assert!(line.starts_with(&name), "{line}");
        }
        // The symlink fixture's target is an absolute path that depends on the checkout.
        let stderr = stderr.replace(env!("CARGO_MANIFEST_DIR"), "[REPO]");
        insta::assert_snapshot!(stderr);
    });
}

#[test]
fn json_output_carries_the_same_diagnostics() {
    let out = envbuild()
        .args([
            "validate",
            "--json",
            "--repo",
            "fixtures/environments",
            "fixtures/environments/invalid/many-problems.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(report["errors"].as_u64().unwrap(), diagnostics.len() as u64);
    let first = &diagnostics[0];
    assert_eq!(first["line"], 3);
    assert_eq!(first["column"], 3);
    assert_eq!(first["json_path"], "biuld");
    assert_eq!(first["hint"], "did you mean `build`?");
}

#[test]
fn hostile_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.json");
    std::fs::write(&deep, "[".repeat(200_000)).unwrap();
    let big = dir.path().join("big.json");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(100 * 1024 * 1024).unwrap();
    let missing = dir.path().join("missing.json");
    let cases: [(&Path, &str); 4] = [
        (&deep, "nested more than 64 levels"),
        (&big, "a config may be at most 1024 KiB"),
        (dir.path(), "is a directory"),
        (&missing, "does not exist"),
    ];
    for (path, expected) in cases {
        let out = envbuild()
            .arg("validate")
            .arg(path)
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(stderr.contains(expected), "{}: {stderr}", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = envbuild().args(["validate", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_is_json_schema_that_accepts_the_valid_fixtures() {
    let out = envbuild().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::draft7::new(&schema).unwrap();
    // Editors check plain JSON: parse the valid fixtures (comments stripped by our parser) and
    // check them against the schema.
    insta::glob!("../../fixtures/environments/valid", "*.json", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let value = envbuild_schema::jsonc::parse(&text).unwrap().to_json();
        let errors: Vec<_> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    });
    for invalid in [
        r#"{"biuld": {}}"#,
        r#"{"build": {"dockerfile": "D", "image": "x"}}"#,
        r#"{"ports": [{"port": 0}]}"#,
        r#"{"terminals": [{"name": "x"}]}"#,
        r#"{"terminals": [[{"command": 1}]]}"#,
    ] {
        let value: serde_json::Value = serde_json::from_str(invalid).unwrap();
        assert!(!validator.is_valid(&value), "{invalid} should be rejected by the schema");
    }
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    envbuild().args(["init", "--repo"]).arg(dir.path()).assert().success();
    let config = dir.path().join(".cursor/environment.json");
    envbuild().arg("validate").arg(&config).assert().success();
    let before = std::fs::read(&config).unwrap();
    let out = envbuild().args(["init", "--repo"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    assert_eq!(std::fs::read(&config).unwrap(), before);
}

/// Run from a subfolder, commands find the repository's config by walking up, and `init`
/// writes at the repository root, never a nested `.cursor/`.
#[test]
fn the_config_is_found_from_a_subfolder_and_init_never_nests() {
    let repo = crate::build::repo("basic");
    let deep = repo.path().join("src/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let store = tempfile::tempdir().unwrap();
    let from_root = crate::build::json(
        &crate::build::envbuild(store.path())
            .args(["key", "--json", "--repo"])
            .arg(repo.path())
            .output()
            .unwrap(),
    );
    let out =
        crate::build::envbuild(store.path()).current_dir(&deep).args(["key", "--json"]).output().unwrap();
    let from_deep = crate::build::json(&out);
    assert_eq!(from_root["env_key"], from_deep["env_key"]);

    let bare = tempfile::tempdir().unwrap();
    crate::build::git(bare.path(), &["init", "-q"]);
    std::fs::create_dir_all(bare.path().join("services/api")).unwrap();
    let out = envbuild()
        .current_dir(bare.path().join("services/api"))
        .args(["init", "--repo", "."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(bare.path().join(".cursor/environment.json").is_file());
    assert!(!bare.path().join("services/api/.cursor").exists(), "init nested a .cursor/ in a subfolder");
}
