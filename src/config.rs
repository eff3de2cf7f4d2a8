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
