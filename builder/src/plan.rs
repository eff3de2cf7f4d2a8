//! The plan of a build: everything known before any build work is done — what the system
//! layer is built from, the install inputs, and both keys. Making a plan reads the repository
//! and touches the engine only to pin base images named by tag (through a [`LazyEngine`], so
//! a warm hit with pinned bases never connects).
//!
//! The system layer comes from the config's base, in Cursor's precedence: a stored snapshot
//! (resolved by the caller, which knows the store), else `image` (used as it is), else `build`
//! (a Dockerfile, from a file or inline), else the default base image. An image named by tag
//! is resolved to its id (pulled through the engine when it is not there), and the id, never
//! the tag, goes into the system key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use envbuild_schema::{Base, Digest, EnvironmentSpec, LoadedConfig};

use crate::buildkit;
use crate::context::{self, BuildContext, Dockerfile};
use crate::dockerfile;
use crate::engine::{LazyEngine, Network};
use crate::error::{BuildError, Result};
use crate::inputs::{self, InputRule};
use crate::keys::{self, EnvInputs, KeyManifest, SystemInputs};
use crate::tree::FileSet;

/// What the system layer is built from.
#[derive(Debug, Clone)]
pub enum SystemSource {
    /// A Dockerfile (a file, or the config's inline text) and its context.
    Dockerfile { context: BuildContext, dockerfile_text: String },
    /// An image used as it is: the config's `image`, or the default base image.
    Image { reference: String, id: String },
    /// A stored snapshot (`snapshot` in the config), by id.
    Snapshot { id: Digest },
}

/// Everything known before any build work: inputs, keys, what to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub repo: PathBuf,
    /// The repository's identity (its normalized remote, else its path).
    pub repository: String,
    pub spec: EnvironmentSpec,
    pub source: SystemSource,
    /// Every tracked file: what `/workspace` holds.
    pub workspace: FileSet,
    /// The install inputs among them: what the env key covers.
    pub inputs: FileSet,
    pub keys: KeyManifest,
    /// Environment install sees (not secrets).
    pub env: BTreeMap<String, String>,
    /// The Dockerfile's build args (`--build-arg`), given to the engine's build.
    pub build_args: BTreeMap<String, String>,
    pub network: Network,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// How the install inputs are chosen.
    pub inputs: InputRule,
    pub env: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    /// Secret name → what the env key records of it (its scope, and its version when it
    /// affects the build), for the secrets install sees.
    pub install_secrets: BTreeMap<String, String>,
    /// Secret name → scope, for every secret in scope: those the Dockerfile mounts are keyed.
    pub available_secrets: BTreeMap<String, String>,
    /// The id the config's `snapshot` resolved to; `None` when the snapshot cannot be used,
    /// and the fallback base is planned instead.
    pub base_snapshot: Option<Digest>,
    /// The default base image, for a config that names no base.
    pub default_image: String,
    pub network: Network,
}

/// The default base image when `--base-image` and `ENVBUILD_BASE_IMAGE` say nothing: Cursor's
/// own default base is Ubuntu-based, and so is this.
pub const DEFAULT_BASE_IMAGE: &str = "ubuntu:24.04";

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|source| BuildError::Task { what, source })?
}

/// The id of image `reference`: its pinned digest, the engine's copy, or a pull.
async fn image_id(reference: &str, engine: &LazyEngine) -> Result<String> {
    if let Some((_, digest)) = reference.split_once('@').filter(|(_, d)| d.starts_with("sha256:")) {
        return Ok(digest.to_owned());
    }
    let engine = engine.get().await?;
    if let Some(image) = engine.image(reference).await? {
        return Ok(image.id);
    }
    match engine.pull(reference).await {
        Ok(image) => Ok(image.id),
        Err(e) => Err(BuildError::MissingBase {
            reference: reference.to_owned(),
            hint: format!(
                "it could not be pulled ({}): load it into the engine (`docker pull {reference}`, `docker load`, or `docker tag` of a local image), pin it by digest (`{reference}@sha256:...`), or choose another base (`--base-image`, `ENVBUILD_BASE_IMAGE`)",
                crate::error::chain(&e)
            ),
        }),
    }
}

fn system_inputs(spec: &EnvironmentSpec, platform: String) -> SystemInputs {
    SystemInputs {
        format: keys::SYSTEM_FORMAT.into(),
        dockerfile: None,
        context: BTreeMap::new(),
        bases: BTreeMap::new(),
        base_snapshot: None,
        build_args: BTreeMap::new(),
        build_secrets: BTreeMap::new(),
        platform,
        user: spec.user.clone(),
    }
}

/// Reads the inputs and computes both keys. The engine is used only to pin bases named by tag.
pub async fn plan(loaded: &LoadedConfig, options: PlanOptions, engine: &LazyEngine) -> Result<Plan> {
    let invalid = || BuildError::Invalid(format!("`{}` is not a valid config", loaded.file.display()));
    let spec = loaded.valid_spec().cloned().ok_or_else(invalid)?;
    let paths = loaded.paths.clone().ok_or_else(invalid)?;
    let mut system = system_inputs(&spec, keys::host_platform());
    let base = match (spec.base(), options.base_snapshot) {
        (Base::Snapshot(_), Some(id)) => {
            system.base_snapshot = Some(id.to_string());
            None
        }
        (Base::Snapshot(_), None) => Some(spec.fallback_base()),
        (base, _) => Some(base),
    };
    let source = match base {
        None => SystemSource::Snapshot { id: options.base_snapshot.ok_or_else(invalid)? },
        Some(Base::Image(reference)) => {
            let id = image_id(reference, engine).await?;
            system.bases.insert(reference.to_owned(), id.clone());
            SystemSource::Image { reference: reference.to_owned(), id }
        }
        Some(Base::Default | Base::Snapshot(_)) => {
            let reference = options.default_image.clone();
            let id = image_id(&reference, engine).await?;
            system.bases.insert(reference.clone(), id.clone());
            SystemSource::Image { reference, id }
        }
        Some(Base::Build(build)) => {
            let Some(context_dir) = paths.context.clone() else {
                return Err(BuildError::Invalid(format!(
                    "the build context of `{}` is missing",
                    loaded.file.display()
                )));
            };
            let (dockerfile, dockerfile_text) = match (&build.dockerfile_contents, &paths.dockerfile) {
                (Some(text), _) => (Dockerfile::Inline(text.clone()), text.clone()),
                (None, Some(file)) => {
                    let text = std::fs::read_to_string(file).map_err(BuildError::io(format!(
                        "cannot read the Dockerfile `{}`",
                        file.display()
                    )))?;
                    (Dockerfile::File(file.clone()), text)
                }
                (None, None) => {
                    return Err(BuildError::Invalid(format!(
                        "the Dockerfile of `{}` is missing",
                        loaded.file.display()
                    )));
                }
            };
            let config = paths.config_file.clone();
            let reads = dockerfile::context_reads(&dockerfile_text, &options.build_args);
            let context = blocking("reading the build context", move || {
                context::collect(&context_dir, &dockerfile, &config, &reads)
            })
            .await?;
            for base in dockerfile::base_images(&dockerfile_text, &options.build_args) {
                let id = image_id(&base.0, engine).await?;
                system.bases.insert(base.0, id);
            }
            system.dockerfile = Some(crate::tree::hash_text(&dockerfile_text));
            system.context = context.files.fingerprints();
            system.build_args =
                options.build_args.iter().map(|(k, v)| (k.clone(), keys::value_digest(v))).collect();
            for id in buildkit::secret_ids(&dockerfile_text) {
                let scope = options
                    .available_secrets
                    .iter()
                    .find(|(name, _)| **name == id || name.eq_ignore_ascii_case(&id))
                    .map_or_else(|| "(not in scope)".to_owned(), |(_, scope)| scope.clone());
                system.build_secrets.insert(id, scope);
            }
            SystemSource::Dockerfile { context, dockerfile_text }
        }
    };
    let repo = paths.repo_root.clone();
    let (workspace, inputs, inputs_from, repository) = {
        let (repo, rule, install) = (repo.clone(), options.inputs.clone(), spec.install.clone());
        blocking("reading the repository", move || {
            let workspace = inputs::tracked(&repo)?;
            let (inputs, from) = inputs::select(&workspace, install.as_deref(), &rule)?;
            Ok((workspace, inputs, from, inputs::repository_id(&repo)))
        })
        .await?
    };
    let env_inputs = EnvInputs {
        format: keys::ENV_FORMAT.into(),
        system_key: keys::UNSET,
        install: spec.install.clone(),
        inputs: inputs.fingerprints(),
        inputs_from,
        env: options.env.iter().map(|(k, v)| (k.clone(), keys::value_digest(v))).collect(),
        secrets: options.install_secrets.clone(),
    };
    Ok(Plan {
        repo,
        repository,
        spec,
        source,
        workspace,
        inputs,
        keys: KeyManifest::new(system, env_inputs)?,
        env: options.env,
        build_args: options.build_args,
        network: options.network,
    })
}
