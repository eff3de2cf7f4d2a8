//! The two cache keys and the manifest of every input behind them (DESIGN §3).
//!
//! - The **system key** names the system image: what the image build reads — the Dockerfile
//!   (or its inline text), the id of every base image (a tag is never trusted), the context
//!   files its `COPY`/`ADD`/bind mounts take (`.dockerignore` honoured; never `.git/` unless
//!   copied), build args, the names of the build secrets it mounts, the platform and the user.
//!   A change here rebuilds the image.
//! - The **env key** names the snapshot: the system key, the install command, the install
//!   inputs (by default the dependency manifests and lock files, see `inputs`), and the
//!   environment install sees: variable names with the digests of their values, secret names
//!   with their scopes. A change here re-runs install, from the last checkpoint.
//!
//! Key documents hold digests of values, never values: a build arg or variable carrying a
//! token would otherwise sit in plain text in every manifest, key record and `key --json`.
//! Secrets are keyed by name and scope, not version, so rotating a token rebuilds nothing; a
//! secret marked `--affects-build` adds its version, so rotating it does.
//!
//! Each key is `sha256:` + the hex digest of the canonical JSON of its inputs (sorted maps,
//! fixed field order, a format version first, so that changing what feeds a key is a
//! deliberate, versioned act). The [`KeyManifest`] keeps every input with its fingerprint;
//! it is stored in each snapshot so [`explain`] can name what differs between two builds.

use std::collections::BTreeMap;

use envbuild_schema::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};

pub const SYSTEM_FORMAT: &str = "envbuild.system-key.v2";
pub const ENV_FORMAT: &str = "envbuild.env-key.v2";

/// What the system image is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInputs {
    pub format: String,
    /// `sha256:` of the Dockerfile's bytes; absent when the base is a snapshot.
    pub dockerfile: Option<String>,
    /// Path → fingerprint (`file 644 sha256:…`, `symlink target`, `dir`) of the context files
    /// the build reads.
    pub context: BTreeMap<String, String>,
    /// Base image reference → image id.
    pub bases: BTreeMap<String, String>,
    /// The snapshot the environment starts from, instead of a Dockerfile.
    pub base_snapshot: Option<String>,
    /// Build arg → the digest of its value.
    pub build_args: BTreeMap<String, String>,
    /// Secret id the Dockerfile mounts → the scope it came from.
    pub build_secrets: BTreeMap<String, String>,
    /// `os/arch`.
    pub platform: String,
    pub user: Option<String>,
}

/// What the snapshot adds on top of the system image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvInputs {
    pub format: String,
    /// Filled in by [`KeyManifest::new`].
    pub system_key: Digest,
    pub install: Option<String>,
    /// Repository path → fingerprint.
    pub inputs: BTreeMap<String, String>,
    /// Where the list of inputs came from (`--input`, `.cursor/envbuild.json`, the default).
    pub inputs_from: String,
    /// Environment variable install sees (not a secret) → the digest of its value.
    pub env: BTreeMap<String, String>,
    /// Secret name → its scope (and version, for a secret that affects the build).
    pub secrets: BTreeMap<String, String>,
}

/// The digest of a value, as key documents record it.
pub fn value_digest(value: &str) -> String {
    Digest::of(value.as_bytes()).to_string()
}

/// Both keys and everything they are made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyManifest {
    pub system_key: Digest,
    pub env_key: Digest,
    pub system: SystemInputs,
    pub env: EnvInputs,
}

/// A placeholder for [`EnvInputs::system_key`] until [`KeyManifest::new`] fills it in.
pub const UNSET: Digest = Digest::from_bytes([0; 32]);

/// The sha256 of the canonical JSON of `value`. Struct fields serialize in declaration order
/// and `BTreeMap`s sorted, so the bytes are canonical. Encoding plain structs cannot fail; if
/// it ever did, the key is refused rather than computed over empty bytes.
fn digest_of<T: Serialize>(key: &'static str, value: &T) -> Result<Digest> {
    let bytes = serde_json::to_vec(value).map_err(|source| BuildError::KeyEncoding { key, source })?;
    Ok(Digest::of(&bytes))
}

impl KeyManifest {
    /// Computes both keys from their inputs (`env.system_key` is filled in).
    pub fn new(system: SystemInputs, mut env: EnvInputs) -> Result<Self> {
        let system_key = digest_of("system", &system)?;
        env.system_key = system_key;
        let env_key = digest_of("env", &env)?;
        Ok(Self { system_key, env_key, system, env })
    }

    /// Checks that the keys are the ones the inputs give (a stored manifest could lie).
    pub fn is_consistent(&self) -> bool {
        digest_of("system", &self.system).is_ok_and(|k| k == self.system_key)
            && self.env.system_key == self.system_key
            && digest_of("env", &self.env).is_ok_and(|k| k == self.env_key)
    }
}

/// The platform envbuild builds for: this machine's.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

/// One input that differs between two key manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Which key it feeds: `system` or `env`.
    pub key: &'static str,
    /// The input: `dockerfile`, `context file src/x`, `base ubuntu:24.04`, ...
    pub input: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

fn compare_maps(
    key: &'static str,
    what: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    out: &mut Vec<Difference>,
) {
    for name in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let (before, after) = (a.get(name), b.get(name));
        if before != after {
            out.push(Difference {
                key,
                input: format!("{what} {name}"),
                before: before.cloned(),
                after: after.cloned(),
            });
        }
    }
}

fn compare<T: PartialEq + ToString>(key: &'static str, input: &str, a: &T, b: &T, out: &mut Vec<Difference>) {
    if a != b {
        out.push(Difference {
            key,
            input: input.to_owned(),
            before: Some(a.to_string()),
            after: Some(b.to_string()),
        });
    }
}

fn opt(value: Option<&String>) -> String {
    value.cloned().unwrap_or_else(|| "(none)".to_owned())
}

/// Every input that differs between `a` and `b`, system inputs first.
pub fn explain(a: &KeyManifest, b: &KeyManifest) -> Vec<Difference> {
    let mut out = Vec::new();
    let (sa, sb) = (&a.system, &b.system);
    compare("system", "key format", &sa.format, &sb.format, &mut out);
    compare("system", "Dockerfile", &opt(sa.dockerfile.as_ref()), &opt(sb.dockerfile.as_ref()), &mut out);
    compare(
        "system",
        "base snapshot",
        &opt(sa.base_snapshot.as_ref()),
        &opt(sb.base_snapshot.as_ref()),
        &mut out,
    );
    compare_maps("system", "base image", &sa.bases, &sb.bases, &mut out);
    compare_maps("system", "context file", &sa.context, &sb.context, &mut out);
    compare_maps("system", "build arg", &sa.build_args, &sb.build_args, &mut out);
    compare_maps("system", "build secret", &sa.build_secrets, &sb.build_secrets, &mut out);
    compare("system", "platform", &sa.platform, &sb.platform, &mut out);
    compare("system", "user", &opt(sa.user.as_ref()), &opt(sb.user.as_ref()), &mut out);
    let (ea, eb) = (&a.env, &b.env);
    compare("env", "key format", &ea.format, &eb.format, &mut out);
    compare("env", "install command", &opt(ea.install.as_ref()), &opt(eb.install.as_ref()), &mut out);
    compare("env", "input list", &ea.inputs_from, &eb.inputs_from, &mut out);
    compare_maps("env", "input file", &ea.inputs, &eb.inputs, &mut out);
    compare_maps("env", "environment variable", &ea.env, &eb.env, &mut out);
    compare_maps("env", "secret", &ea.secrets, &eb.secrets, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyManifest {
        KeyManifest::new(
            SystemInputs {
                format: SYSTEM_FORMAT.into(),
                dockerfile: Some("sha256:aa".into()),
                context: BTreeMap::from([("Dockerfile".into(), "file 644 sha256:aa".into())]),
                bases: BTreeMap::new(),
                base_snapshot: None,
                build_args: BTreeMap::new(),
                build_secrets: BTreeMap::new(),
                platform: "linux/amd64".into(),
                user: Some("agent".into()),
            },
            EnvInputs {
                format: ENV_FORMAT.into(),
                system_key: UNSET,
                install: Some("npm ci".into()),
                inputs: BTreeMap::from([("package.json".into(), "file 644 git:11".into())]),
                inputs_from: "default".into(),
                env: BTreeMap::new(),
                secrets: BTreeMap::new(),
            },
        )
        .unwrap()
    }

    type Change<T> = Box<dyn Fn(&mut T)>;

    /// Any change to what feeds a key must change the key: each field, one at a time.
    #[test]
    fn every_input_feeds_its_key() {
        let base = sample();
        assert!(base.is_consistent());
        let system_changes: Vec<Change<SystemInputs>> = vec![
            Box::new(|s| s.dockerfile = Some("sha256:bb".into())),
            Box::new(|s| {
                s.context.insert("x".into(), "dir".into());
            }),
            Box::new(|s| {
                s.bases.insert("ubuntu".into(), "sha256:1".into());
            }),
            Box::new(|s| s.base_snapshot = Some("sha256:2".into())),
            Box::new(|s| {
                s.build_args.insert("A".into(), value_digest("1"));
            }),
            Box::new(|s| {
                s.build_secrets.insert("npm_token".into(), "workspace".into());
            }),
            Box::new(|s| s.platform = "linux/arm64".into()),
            Box::new(|s| s.user = None),
        ];
        for change in system_changes {
            let mut system = base.system.clone();
            change(&mut system);
            let changed = KeyManifest::new(system, base.env.clone()).unwrap();
            assert_ne!(changed.system_key, base.system_key);
            assert_ne!(changed.env_key, base.env_key, "the env key includes the system key");
            assert_eq!(explain(&base, &changed).len(), 1);
        }
        let env_changes: Vec<Change<EnvInputs>> = vec![
            Box::new(|e| e.install = None),
            Box::new(|e| {
                e.inputs.insert("src/a".into(), "file 644 git:22".into());
            }),
            Box::new(|e| {
                e.env.insert("NODE_ENV".into(), value_digest("test"));
            }),
            Box::new(|e| {
                e.secrets.insert("TOKEN".into(), "repo:github.com/acme/app".into());
            }),
            Box::new(|e| e.inputs_from = "--input src/**".into()),
        ];
        for change in env_changes {
            let mut env = base.env.clone();
            change(&mut env);
            let changed = KeyManifest::new(base.system.clone(), env).unwrap();
            assert_eq!(changed.system_key, base.system_key, "env inputs never touch the system key");
            assert_ne!(changed.env_key, base.env_key);
            let diff = explain(&base, &changed);
            assert_eq!(diff.len(), 1, "{diff:?}");
            assert_eq!(diff[0].key, "env");
        }
    }

    /// The keys of a fixed input, pinned: a change here changes every user's cache.
    #[test]
    fn keys_are_stable() {
        let keys = sample();
        assert_eq!(
            keys.system_key.to_string(),
            "sha256:7929493b3198dcce7adb46e60590ce52a5de914963eb22b40b3c83422b39c547"
        );
    }
}
