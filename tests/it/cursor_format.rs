//! Cursor's bases and their precedence, in-process on the engine double: `snapshot` over
//! `image` over `build` over the default base; the snapshot fallback (and `--strict`); images
//! resolved to ids, pulled when absent, a clear error when no registry has them;
//! `dockerfileContents`; build secrets given to the build as secrets only.

use std::collections::BTreeMap;

use envbuild::Error;
use envbuild_builder::BuildError;
use envbuild_builder::engine::ImageConfig;
use envbuild_builder::testing::{Call, FakeEngine, Script};
use envbuild_secrets::{Scope, When};
use tokio_util::sync::CancellationToken;

use crate::workflows::{World, fake, rootfs};

const DOCKERFILE: &str = "FROM scratch\nCOPY hello /hello\n";

fn engine_with_images(images: &[&str]) -> FakeEngine {
    let engine = fake(Script { exports: [rootfs(&[])].into(), ..Script::default() });
    for image in images {
        engine.add_image(image, ImageConfig::default(), BTreeMap::new());
    }
    engine
}

fn builds(engine: &FakeEngine) -> Vec<Call> {
    engine.calls().into_iter().filter(|c| matches!(c, Call::Build { .. })).collect()
}

/// The image the install container was created from.
fn install_image(engine: &FakeEngine) -> String {
    engine
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::CreateContainer { image, .. } => Some(image),
            _ => None,
        })
        .expect("no install container")
}

#[tokio::test]
async fn an_image_base_is_used_as_it_is_and_keyed_by_its_id() {
    let world = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    let engine = engine_with_images(&["node:22"]);
    let report = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert!(builds(&engine).is_empty(), "an image base was built");
    let node = engine.images()[0].clone();
    assert_eq!(install_image(&engine), node);
    let planned =
        envbuild::build::plan(&world.session(&engine, &CancellationToken::new()), &world.options().repo)
            .await
            .unwrap();
    assert_eq!(planned.plan.keys.system.bases.get("node:22"), Some(&node), "the key records the id");
    assert_eq!(planned.plan.keys.system_key, report.system_key);
}

#[tokio::test]
async fn an_absent_image_is_pulled_and_an_unpullable_one_is_a_clear_error() {
    let world = World::with_config(r#"{ "image": "python:3.12-slim" }"#, &[]);
    let mut script = Script { exports: [rootfs(&[])].into(), ..Script::default() };
    script.pullable.insert("python:3.12-slim".into());
    let engine = fake(script);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert!(engine.calls().contains(&Call::Pull("python:3.12-slim".into())));

    let engine = fake(Script::default());
    let err = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap_err();
    let Error::Build(BuildError::MissingBase { reference, hint }) = &err else { panic!("{err:?}") };
    assert_eq!(reference, "python:3.12-slim");
    assert!(hint.contains("docker pull python:3.12-slim") && hint.contains("--base-image"), "{hint}");
}

#[tokio::test]
async fn no_base_means_the_default_base_image() {
    let world = World::with_config(r#"{ "install": "true" }"#, &[]);
    let engine = engine_with_images(&["local/base:1"]);
    let mut options = world.options();
    options.repo.base_image = "local/base:1".into();
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &options).await.unwrap();
    assert!(builds(&engine).is_empty());
    assert_eq!(install_image(&engine), engine.images()[0]);
    let planned = envbuild::build::plan(&world.session(&engine, &CancellationToken::new()), &options.repo)
        .await
        .unwrap();
    assert!(planned.plan.keys.system.bases.contains_key("local/base:1"));
    assert!(planned.plan.spec.agent_can_update_snapshot_effective());
}

#[tokio::test]
async fn dockerfile_contents_are_built_from_memory() {
    let config =
        serde_json::json!({ "build": { "dockerfileContents": DOCKERFILE, "context": "." } }).to_string();
    let world = World::with_config(&config, &[("hello", "hi\n")]);
    let engine = engine_with_images(&[]);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    let calls = builds(&engine);
    let [Call::Build { dockerfile, .. }] = calls.as_slice() else { panic!("{:?}", engine.calls()) };
    assert_eq!(dockerfile, ".envbuild.Dockerfile");
    // The text is in the system key: another text, another key.
    let session = world.session(&engine, &CancellationToken::new());
    let before = envbuild::build::plan(&session, &world.options().repo).await.unwrap().plan.keys.system_key;
    let edited = serde_json::json!({ "build": { "dockerfileContents": format!("{DOCKERFILE}RUN true\n"), "context": "." } });
    std::fs::write(world.repo.path().join(".cursor/environment.json"), edited.to_string()).unwrap();
    let after = envbuild::build::plan(&session, &world.options().repo).await.unwrap().plan.keys.system_key;
    assert_ne!(before, after);
}

#[tokio::test]
async fn a_stored_snapshot_takes_precedence_over_image_and_build() {
    // A snapshot to start from, built first.
    let base = World::with_config(r#"{ "image": "node:22" }"#, &[]);
    let engine = engine_with_images(&["node:22"]);
    let built = envbuild::build::build(&base.session(&engine, &CancellationToken::new()), &base.options())
        .await
        .unwrap();

    let config = serde_json::json!({
        "snapshot": built.id.to_string(), "image": "node:22", "build": { "dockerfile": "Dockerfile" }
    });
    let mut world = World::with_config(&config.to_string(), &[(".cursor/Dockerfile", DOCKERFILE)]);
    world.store = base.store.clone();
    let engine = engine_with_images(&["node:22"]);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert!(builds(&engine).is_empty(), "the snapshot base was rebuilt");
    assert!(engine.calls().iter().any(|c| matches!(c, Call::Import { .. })), "the snapshot was not imported");
}

#[tokio::test]
async fn an_unusable_snapshot_falls_back_with_a_warning_or_fails_when_strict() {
    // A Cursor snapshot id, which no envbuild store holds, with an image to fall back to.
    let world = World::with_config(
        r#"{ "snapshot": "snapshot-20260212-0a1b2c3d", "image": "node:22", "install": "true" }"#,
        &[],
    );
    let engine = engine_with_images(&["node:22"]);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    let warned = world.reporter.text();
    assert!(
        warned.contains("the snapshot `snapshot-20260212-0a1b2c3d` cannot be used")
            && warned.contains("`image` instead"),
        "{warned}"
    );
    assert_eq!(install_image(&engine), engine.images()[0], "the fallback is the image");
    assert!(engine.calls().iter().any(|c| matches!(c, Call::Start(_))), "install still runs");

    let mut strict = world.options();
    strict.repo.strict = true;
    let engine = engine_with_images(&["node:22"]);
    let err = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &strict)
        .await
        .unwrap_err();
    assert!(envbuild_builder::error::chain(&err).contains("--strict"), "{err}");
    assert!(engine.calls().iter().all(|c| !matches!(c, Call::CreateContainer { .. })));

    // Fallback to `build`, and to the default base when there is nothing else.
    let world = World::with_config(
        r#"{ "snapshot": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "build": { "dockerfile": "Dockerfile" } }"#,
        &[(".cursor/Dockerfile", DOCKERFILE), (".cursor/hello", "hi\n")],
    );
    let engine = engine_with_images(&[]);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert_eq!(builds(&engine).len(), 1, "the fallback is the Dockerfile");
    let world = World::with_config(r#"{ "snapshot": "gone" }"#, &[]);
    let engine = engine_with_images(&["local/base:1"]);
    let mut options = world.options();
    options.repo.base_image = "local/base:1".into();
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &options).await.unwrap();
    assert!(world.reporter.text().contains("the default base image instead"), "{}", world.reporter.text());
}

#[tokio::test]
async fn build_secrets_reach_the_build_as_secrets_only() {
    let dockerfile =
        "FROM scratch\nRUN --mount=type=secret,id=npm_token cat /run/secrets/npm_token >/dev/null\n";
    let world = World::with_config(
        r#"{ "build": { "dockerfile": "Dockerfile" } }"#,
        &[(".cursor/Dockerfile", dockerfile)],
    );
    world.set_secret(&Scope::workspace(), "NPM_TOKEN", When::Install, "npm_build_time_secret_9").await;
    let engine = engine_with_images(&[]);
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    let calls = builds(&engine);
    let [Call::Build { build_args, secrets, .. }] = calls.as_slice() else { panic!("{calls:?}") };
    assert_eq!(secrets, &["npm_token"]);
    assert!(build_args.is_empty());
}

#[tokio::test]
async fn testing_on_with_a_missing_chrome_is_warned_about() {
    let world =
        World::with_config(r#"{ "image": "node:22", "chromeExecutablePath": "/usr/bin/chromium" }"#, &[]);
    let engine = engine_with_images(&["node:22"]);
    let report = envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert!(
        world
            .reporter
            .text()
            .contains("`chromeExecutablePath` `/usr/bin/chromium` is not in the environment")
    );
    // Stored with the snapshot: the normalized config, effective values written in.
    let manifest = envbuild_cache::restore::read_manifest(&*world.store, &report.id).await.unwrap();
    let environment = manifest.environment.unwrap();
    assert_eq!(environment["agentCanUpdateSnapshot"], false);
    assert_eq!(environment["enable_testing"], true);

    // With Chrome there (or testing off), no warning.
    let world =
        World::with_config(r#"{ "image": "node:22", "chromeExecutablePath": "/usr/bin/chromium" }"#, &[]);
    let engine = fake(Script {
        exports: [rootfs(&[("usr/bin/chromium", "#!/bin/sh\n")])].into(),
        ..Script::default()
    });
    engine.add_image("node:22", ImageConfig::default(), BTreeMap::new());
    envbuild::build::build(&world.session(&engine, &CancellationToken::new()), &world.options())
        .await
        .unwrap();
    assert!(!world.reporter.text().contains("chromeExecutablePath"), "{}", world.reporter.text());
}
