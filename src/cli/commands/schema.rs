//! `envbuild schema`: the JSON Schema of environment.json on stdout.

use std::process::ExitCode;

use crate::cli::output;

pub fn run() -> anyhow::Result<ExitCode> {
    output::json(&envbuild_schema::json_schema::json_schema())?;
    Ok(ExitCode::SUCCESS)
}
