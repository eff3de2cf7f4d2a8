//! The command line: every command, flag and help text. Doc comments here are the `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::env;

/// envbuild: build development environments once, boot them in seconds.
///
/// envbuild reads a repository's `.cursor/environment.json` (Cursor's format), builds the system
/// layer from its Dockerfile, runs its `install` command with the repository at `/workspace`,
/// and stores the resulting root filesystem as an immutable, deduplicated snapshot named by its
/// hash. A cache key computed from every build input maps to the snapshot, so an unchanged
/// repository never rebuilds.
///
/// Start with `envbuild init` in a repository, check the file with `envbuild validate`.
#[derive(Debug, Parser)]
#[command(name = "envbuild", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v: debug, -vv: trace). `RUST_LOG` overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an environment.json and report every problem at once.
    ///
    /// Each problem is printed as `PATH:LINE:COL: JSON.path: message`, with a `hint:` line when
    /// the fix is clear. Besides the format itself, it checks that `build` or `snapshot` is set,
    /// that the Dockerfile exists and, like the build context, stays inside the repository,
    /// that terminal names are unique, and that ports are in range and not repeated.
    ///
    /// Exit status: 0 when valid (warnings allowed), 1 when invalid, 2 on a usage error.
    #[command(
        after_help = "Examples:\n  envbuild validate\n  envbuild validate path/to/repo/.cursor/environment.json --json"
    )]
    Validate(ValidateArgs),
    /// Print the JSON Schema of environment.json, for editors.
    ///
    /// Save it and point your editor at it, or reference it from the file itself:
    /// `envbuild schema > .cursor/environment.schema.json` and `"$schema": "./environment.schema.json"`.
    Schema,
    /// Write a commented starter `.cursor/environment.json` and `.cursor/Dockerfile`.
    ///
    /// The install command is guessed from the lock files in the repository (npm, pnpm, yarn,
    /// pip, cargo, go). Existing files are never overwritten: if either file exists, nothing is
    /// written.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The config to check.
    #[arg(default_value = envbuild_schema::DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub path: PathBuf,
    /// Repository root that paths must stay inside. Default: the parent of `.cursor/`, else the
    /// nearest folder with `.git`, else the folder of the file.
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print the diagnostics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The repository to write into.
    #[arg(long, value_name = "DIR", default_value = ".", env = env::REPO)]
    pub repo: PathBuf,
}
