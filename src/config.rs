//! Finding and loading a repository's `.cursor/environment.json` for a workflow, from anywhere
//! inside the repository (see `envbuild_schema::find`): every diagnostic is reported, and a
//! config with errors stops the workflow.

use std::path::Path;

use envbuild_schema::LoadedConfig;

use crate::error::{Error, Result};
use crate::session::Session;

/// Loads the config of the repository at (or above) `repo`, reporting its diagnostics; fails
/// when it is invalid.
pub fn load(session: &Session, repo: &Path) -> Result<LoadedConfig> {
    let start = std::fs::canonicalize(repo)
        .map_err(Error::io(format!("cannot open the repository `{}`", repo.display())))?;
    let (repo_dir, file) = envbuild_schema::find(&start);
    let loaded = envbuild_schema::load(&file, Some(&repo_dir));
    for diagnostic in &loaded.diagnostics {
        session.note(diagnostic.to_string());
    }
    if loaded.has_errors() {
        return Err(Error::InvalidConfig { file });
    }
    Ok(loaded)
}

/// envbuild's own settings for a repository, in `.cursor/envbuild.json` beside environment.json
/// (which must stay a file Cursor accepts, so nothing of envbuild's goes there). JSON with
/// comments.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The install inputs, as globs over tracked files (`package.json`, `apps/*/package.json`),
    /// instead of the default manifests and lock files.
    #[serde(default)]
    pub inputs: Option<Vec<String>>,
    /// The environment group the repository is in: it sees the group's secrets
    /// (`envbuild secrets set NAME --env GROUP`), as every repository of a Cursor environment
    /// sees that environment's.
    #[serde(default)]
    pub environment: Option<String>,
}

/// Where the settings of the repository whose config is `config_file` live.
pub fn settings_path(config_file: &Path) -> std::path::PathBuf {
    config_file.with_file_name("envbuild.json")
}

/// The settings beside `config_file`; none when there is no such file.
pub fn settings(config_file: &Path) -> Result<Option<Settings>> {
    let path = settings_path(config_file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()))(e)),
    };
    let invalid = |detail: String| Error::Failed(format!("`{}` is not valid: {detail}", path.display()));
    let tree = envbuild_schema::jsonc::parse(&text).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_value(tree.to_json()).map(Some).map_err(|e| {
        invalid(format!("{e}\nhint: it takes `{{ \"inputs\": [\"package.json\", \"src/**\"], \"environment\": \"GROUP\" }}`"))
    })
}
