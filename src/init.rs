//! `envbuild init`: a commented starter config and Dockerfile, never overwriting anything.
//! The install command is guessed from the lock files in the repository.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const DOCKERFILE: &str = r"# The system layer of the environment: OS packages and toolchains.
# envbuild caches the image under a key made of this file, the build context and the base
# image id, so it rebuilds only when one of those changes. Project dependencies belong in
# `install` (environment.json), which runs on top of this image and again at every boot.
FROM ubuntu:24.04

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git sudo \
 && rm -rf /var/lib/apt/lists/*

# Agents work as the unprivileged `ubuntu` user (uid 1000 in this image), with sudo.
RUN echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ubuntu && chmod 0440 /etc/sudoers.d/ubuntu
";

/// Guesses the install command from the lock files at the repository root.
fn guess_install(repo: &Path) -> &'static str {
    let has = |name: &str| repo.join(name).exists();
    if has("pnpm-lock.yaml") {
        "pnpm install --frozen-lockfile"
    } else if has("yarn.lock") {
        "yarn install --frozen-lockfile"
    } else if has("package-lock.json") {
        "npm ci"
    } else if has("package.json") {
        "npm install"
    } else if has("uv.lock") {
        "uv sync"
    } else if has("requirements.txt") {
        "pip install -r requirements.txt"
    } else if has("Cargo.toml") {
        "cargo fetch"
    } else if has("go.mod") {
        "go mod download"
    } else {
        "echo 'replace me with the command that installs your dependencies'"
    }
}

fn environment_json(name: &str, install: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        r#"{{
  // Cursor's environment format, read by envbuild and by Cursor's cloud agents.
  // Check it with `envbuild validate`; `envbuild schema` prints its JSON Schema for editors.
  "name": {name},

  // The system layer. Paths are relative to this folder (.cursor/). The context defaults to
  // this folder too, so editing the rest of the repository does not rebuild the image;
  // set "context": ".." if the Dockerfile needs to COPY files from the repository.
  "build": {{
    "dockerfile": "Dockerfile"
  }},

  // Who install, start and the terminals run as.
  "user": "ubuntu",

  // Installs the project's dependencies, with the repository at /workspace. It runs when the
  // snapshot is built and again at every boot, so it must be idempotent (safe to run twice).
  "install": {install},

  // Runs at boot after install and before the terminals, e.g. to start a database.
  // "start": "sudo service postgresql start",

  // Long-running processes, each in its own named terminal (`envbuild logs ENV NAME`).
  "terminals": [
    // {{ "name": "dev", "command": "npm run dev", "description": "The dev server on port 3000" }}
  ]
}}
"#,
        name = quote(name),
        install = quote(install),
    )
}

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub config: PathBuf,
    pub dockerfile: PathBuf,
}

/// Writes `.cursor/environment.json` and `.cursor/Dockerfile` into the repository at `repo`;
/// refuses, writing nothing, when either exists.
pub fn init(repo: &Path) -> Result<Written> {
    let start = std::fs::canonicalize(repo)
        .map_err(Error::io(format!("cannot open the repository folder `{}`", repo.display())))?;
    // Inside a repository, its root: never a nested `.cursor/` in a subfolder.
    let (repo, _) = envbuild_schema::find(&start);
    let cursor_dir = repo.join(".cursor");
    let config = cursor_dir.join("environment.json");
    let dockerfile = cursor_dir.join("Dockerfile");
    let existing: Vec<_> = [&config, &dockerfile].into_iter().filter(|p| p.exists()).collect();
    if !existing.is_empty() {
        let names: Vec<_> = existing.iter().map(|p| format!("`{}`", p.display())).collect();
        return Err(Error::Failed(format!(
            "{} already exist{}; init never overwrites files, so nothing was written\nhint: check the existing config with `envbuild validate`",
            names.join(" and "),
            if names.len() == 1 { "s" } else { "" }
        )));
    }
    let name =
        repo.file_name().map_or_else(|| "environment".to_owned(), |n| n.to_string_lossy().into_owned());
    std::fs::create_dir_all(&cursor_dir)
        .map_err(Error::io(format!("cannot create `{}`", cursor_dir.display())))?;
    write_new(&dockerfile, DOCKERFILE)?;
    write_new(&config, &environment_json(&name, guess_install(&repo)))?;
    Ok(Written { config, dockerfile })
}

/// Creates `path` with `contents`, failing if it appeared in the meantime.
fn write_new(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io(format!("cannot create `{}`", path.display())))?;
    file.write_all(contents.as_bytes()).map_err(Error::io(format!("cannot write `{}`", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        init(dir.path()).unwrap();
        let loaded = envbuild_schema::load(&dir.path().join(".cursor/environment.json"), None);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.spec.unwrap().install.as_deref(), Some("npm ci"));
        // A second run refuses and leaves the files as they are.
        std::fs::write(dir.path().join(".cursor/Dockerfile"), "FROM x\n").unwrap();
        assert!(init(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join(".cursor/Dockerfile")).unwrap(), "FROM x\n");
    }
}
