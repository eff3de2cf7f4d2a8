//! The plan of a build: everything known before any build work is done — what the system
//! layer is built from, the install inputs, and both keys. Making a plan reads the repository
//! and touches the engine only to pin base images named by tag (through a [`LazyEngine`], so
//! a warm hit never connects).

use std::collections::BTreeMap;
use std::path::PathBuf;

use envbuild_schema::{Digest, EnvironmentSpec, LoadedConfig};

use crate::context::{self, BuildContext};
use crate::dockerfile;
use crate::engine::{LazyEngine, Network};
use crate::error::{BuildError, Result};
use crate::inputs;
use crate::keys::{self, EnvInputs, KeyManifest, SystemInputs};
use crate::tree::FileSet;

/// What the system layer is built from.
#[derive(Debug, Clone)]
pub enum SystemSource {
    Dockerfile {
        context: BuildContext,
        dockerfile_text: String,
    },
    /// A stored snapshot (`snapshot` in the config), by id.
    Snapshot {
        id: Digest,
    },
}

/// Everything known before any build work: inputs, keys, what to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub repo: PathBuf,
    pub spec: EnvironmentSpec,
    pub source: SystemSource,
    pub inputs: FileSet,
    pub keys: KeyManifest,
    /// Environment install sees (not secrets).
    pub env: BTreeMap<String, String>,
    /// The Dockerfile's build args (`--build-arg`), given to the engine's build.
    pub build_args: BTreeMap<String, String>,
    pub network: Network,
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Narrow the install inputs to these globs.
    pub input_globs: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    /// Secret name → version, for secrets install sees.
    pub secret_versions: BTreeMap<String, String>,
    /// The id the config's `snapshot` resolved to, when the base is a snapshot.
    pub base_snapshot: Option<Digest>,
    pub network: Network,
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|source| BuildError::Task { what, source })?
}

/// Reads the inputs and computes both keys. The engine is used only to pin bases named by tag.
pub async fn plan(loaded: &LoadedConfig, options: PlanOptions, engine: &LazyEngine) -> Result<Plan> {
    let invalid = || BuildError::Invalid(format!("`{}` is not a valid config", loaded.file.display()));
    let spec = loaded.valid_spec().cloned().ok_or_else(invalid)?;
    let paths = loaded.paths.clone().ok_or_else(invalid)?;
    let platform = keys::host_platform();
    let (source, system) = if spec.build.is_some() {
        let (Some(dockerfile), Some(context_dir)) = (&paths.dockerfile, &paths.context) else {
            return Err(BuildError::Invalid(format!(
                "the Dockerfile or the build context of `{}` is missing",
                loaded.file.display()
            )));
        };
        let dockerfile_text = std::fs::read_to_string(dockerfile)
            .map_err(BuildError::io(format!("cannot read the Dockerfile `{}`", dockerfile.display())))?;
        let (dockerfile_path, context_dir, config) =
            (dockerfile.clone(), context_dir.clone(), paths.config_file.clone());
        let context = blocking("reading the build context", move || {
            context::collect(&context_dir, &dockerfile_path, &config)
        })
        .await?;
        let mut bases = BTreeMap::new();
        for base in dockerfile::base_images(&dockerfile_text, &options.build_args) {
            let id = if let Some(digest) = base.pinned_digest() {
                digest.to_owned()
            } else {
                let engine = engine.get().await?;
                engine.image(&base.0).await?.map(|image| image.id).ok_or_else(|| BuildError::MissingBase {
                    reference: base.0.clone(),
                    hint: format!(
                        "no registry may be reachable: load it (`docker pull {0}` or `docker load`), or pin it by digest (`{0}@sha256:...`)",
                        base.0
                    ),
                })?
            };
            bases.insert(base.0, id);
        }
        let system = SystemInputs {
            format: keys::SYSTEM_FORMAT.into(),
            dockerfile: Some(crate::tree::hash_text(&dockerfile_text)),
            context: context.files.fingerprints(),
            bases,
            base_snapshot: None,
            build_args: options.build_args.clone(),
            platform,
            user: spec.user.clone(),
        };
        (SystemSource::Dockerfile { context, dockerfile_text }, system)
    } else {
        let id = options.base_snapshot.ok_or_else(|| {
            BuildError::Invalid("the config names a base snapshot, but it was not resolved".into())
        })?;
        let system = SystemInputs {
            format: keys::SYSTEM_FORMAT.into(),
            dockerfile: None,
            context: BTreeMap::new(),
            bases: BTreeMap::new(),
            base_snapshot: Some(id.to_string()),
            build_args: BTreeMap::new(),
            platform,
            user: spec.user.clone(),
        };
        (SystemSource::Snapshot { id }, system)
    };
    let repo = paths.repo_root.clone();
    let inputs = {
        let (repo, globs) = (repo.clone(), options.input_globs.clone());
        blocking("reading the repository", move || inputs::collect(&repo, &globs)).await?
    };
    let env_inputs = EnvInputs {
        format: keys::ENV_FORMAT.into(),
        system_key: keys::UNSET,
        install: spec.install.clone(),
        inputs: inputs.fingerprints(),
        env: options.env.clone(),
        secrets: options.secret_versions.clone(),
    };
    Ok(Plan {
        repo,
        spec,
        source,
        inputs,
        keys: KeyManifest::new(system, env_inputs)?,
        env: options.env,
        build_args: options.build_args,
        network: options.network,
    })
}
