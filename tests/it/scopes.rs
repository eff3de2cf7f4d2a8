//! Secrets reach only the builds and environments of their scopes, in-process on the engine
//! double: a repository's secret is absent from another repository's key, build and
//! environment; rotating a value changes no key unless the secret affects the build; a secret
//! that cannot be decrypted fails only the repositories that see it.

use envbuild_builder::testing::{Call, FakeEngine, Script};
use envbuild_secrets::{Keyring, Scope, When};
use tokio_util::sync::CancellationToken;

use crate::workflows::{World, fake, rootfs};

/// The engine double, with the repositories' base image.
fn engine() -> FakeEngine {
    let engine = fake(Script { exports: [rootfs(&[])].into(), ..Script::default() });
    engine.add_image(
        "node:22",
        envbuild_builder::engine::ImageConfig::default(),
        std::collections::BTreeMap::new(),
    );
    engine
}

/// Every value any call carried: environments, commands, secrets files.
fn everything_sent(engine: &FakeEngine) -> String {
    format!("{:?}", engine.calls())
}

async fn key(world: &World) -> serde_json::Value {
    let engine = engine();
    let planned =
        envbuild::build::plan(&world.session(&engine, &CancellationToken::new()), &world.options().repo)
            .await
            .unwrap();
    serde_json::to_value(&planned.plan.keys).unwrap()
}

fn repository_of(world: &World) -> Scope {
    Scope::Repository(envbuild_builder::inputs::repository_id(world.repo.path()))
}

#[tokio::test]
async fn a_repository_secret_stays_with_its_repository() {
    const VALUE: &str = "repo-a-token-0c9e7d1b55";
    let a = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    let mut b = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    b.store = a.store.clone();
    a.set_secret(&repository_of(&a), "NPM_TOKEN", When::Both, VALUE).await;

    // A's key names the secret and its scope (never the value); B's does not know it.
    let key_a = key(&a).await;
    assert_eq!(key_a["env"]["secrets"]["NPM_TOKEN"], repository_of(&a).to_string());
    assert!(!key_a.to_string().contains(VALUE));
    let key_b = key(&b).await;
    assert!(key_b["env"]["secrets"].as_object().unwrap().is_empty(), "{key_b}");

    // A's build gets the value, B's never sees it.
    let engine_a = engine();
    envbuild::build::build(&a.session(&engine_a, &CancellationToken::new()), &a.options()).await.unwrap();
    assert!(everything_sent(&engine_a).contains(VALUE));
    let engine_b = engine();
    let built =
        envbuild::build::build(&b.session(&engine_b, &CancellationToken::new()), &b.options()).await.unwrap();
    assert!(!everything_sent(&engine_b).contains(VALUE), "B's build was given A's secret");

    // B's environment does not get it either.
    let booted = engine();
    let options = envbuild::boot::BootOptions {
        target: envbuild::boot::Target::Snapshot(built.id.to_string()),
        repo: Some(b.repo.path().to_path_buf()),
        name: Some("b".into()),
        groups: Vec::new(),
        network: envbuild_builder::engine::Network::None,
        start_wait: std::time::Duration::from_secs(1),
        engine: envbuild::boot::EngineChoice::Docker,
        publish: Vec::new(),
        ready_wait: None,
    };
    envbuild::boot::boot(&b.session(&booted, &CancellationToken::new()), &options).await.unwrap();
    assert!(!everything_sent(&booted).contains(VALUE), "B's environment was given A's secret");
}

#[tokio::test]
async fn rotating_a_secret_changes_no_key_unless_it_affects_the_build() {
    let world = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    let scope = repository_of(&world);
    world.set_secret(&scope, "NPM_TOKEN", When::Install, "first-value-of-the-token").await;
    let before = key(&world).await;
    world.set_secret(&scope, "NPM_TOKEN", When::Install, "rotated-value-of-the-token").await;
    assert_eq!(key(&world).await["env_key"], before["env_key"], "rotating rebuilt");

    // Marked to affect the build: each version is its own key.
    let session = world.session(&engine(), &CancellationToken::new());
    let options = envbuild::secrets::SetOptions { when: When::Install, redact: true, affects_build: true };
    let value = envbuild_secrets::SecretString::new("third-value-of-the-token".into());
    envbuild::secrets::set(&session, &scope, "NPM_TOKEN", &options, &value).await.unwrap();
    let third = key(&world).await;
    assert_ne!(third["env_key"], before["env_key"]);
    let value = envbuild_secrets::SecretString::new("fourth-value-of-the-token".into());
    envbuild::secrets::set(&session, &scope, "NPM_TOKEN", &options, &value).await.unwrap();
    assert_ne!(key(&world).await["env_key"], third["env_key"]);
}

#[tokio::test]
async fn a_secret_that_cannot_be_opened_fails_only_who_sees_it() {
    let a = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    let mut b = World::with_config(r#"{ "image": "node:22", "install": "true" }"#, &[]);
    b.store = a.store.clone();
    a.set_secret(&repository_of(&a), "NPM_TOKEN", When::Install, "sealed-with-key-one").await;
    // Both now open secrets with another key file.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Keyring { master_key: elsewhere.path().join("other.key"), kms_key_id: None };
    envbuild_secrets::envelope::LocalKey::load_or_create(&other.master_key).unwrap();

    let engine_a = engine();
    let mut session = a.session(&engine_a, &CancellationToken::new());
    session.keyring = other.clone();
    let err = envbuild::build::build(&session, &a.options()).await.unwrap_err();
    let text = envbuild_builder::error::chain(&err);
    assert!(text.contains("`NPM_TOKEN`") && text.contains(&repository_of(&a).to_string()), "{text}");
    assert!(
        text.contains("hint:")
            && text.contains("ENVBUILD_MASTER_KEY")
            && !text.contains("sealed-with-key-one"),
        "{text}"
    );
    assert!(
        engine_a.calls().iter().all(|c| !matches!(c, Call::CreateContainer { .. })),
        "A built without its secret"
    );

    let engine_b = engine();
    let mut session = b.session(&engine_b, &CancellationToken::new());
    session.keyring = other;
    envbuild::build::build(&session, &b.options()).await.unwrap();

    // A missing key file is named, and not created by opening.
    let mut session = a.session(&engine(), &CancellationToken::new());
    session.keyring = Keyring { master_key: elsewhere.path().join("missing.key"), kms_key_id: None };
    let err = envbuild::build::build(&session, &a.options()).await.unwrap_err();
    assert!(envbuild_builder::error::chain(&err).contains("missing.key"), "{err}");
    assert!(!elsewhere.path().join("missing.key").exists(), "opening created a master key");
}
