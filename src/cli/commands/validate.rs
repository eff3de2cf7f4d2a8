//! `envbuild validate`: every problem of one config, human or JSON.

use std::process::ExitCode;

use envbuild_schema::{Diagnostic, Severity};
use serde::Serialize;

use crate::cli::ValidateArgs;
use crate::cli::{output, ui};

#[derive(Debug, Serialize)]
struct Report<'a> {
    file: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    // The default path, from a subfolder of the repository: the repository's config.
    let path =
        if args.path == std::path::Path::new(envbuild_schema::DEFAULT_CONFIG_PATH) && !args.path.exists() {
            let cwd = std::env::current_dir()?;
            let (_, found) = envbuild_schema::find(&cwd);
            found.strip_prefix(&cwd).map(std::path::Path::to_path_buf).unwrap_or(found)
        } else {
            args.path.clone()
        };
    let args = &ValidateArgs { path, repo: args.repo.clone(), json: args.json };
    let loaded = envbuild_schema::load(&args.path, args.repo.as_deref());
    let errors = loaded.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = loaded.diagnostics.len() - errors;
    if args.json {
        output::json(&Report {
            file: args.path.display().to_string(),
            valid: errors == 0,
            errors,
            warnings,
            diagnostics: &loaded.diagnostics,
        })?;
    } else {
        for diagnostic in &loaded.diagnostics {
            ui::eprint_line(diagnostic);
        }
        ui::eprint_line(summary(&args.path.display().to_string(), errors, warnings));
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn summary(file: &str, errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => format!("`{file}` is valid"),
        (0, w) => format!("`{file}` is valid, with {}", plural(w, "warning")),
        (e, 0) => format!("`{file}` is invalid: {}", plural(e, "error")),
        (e, w) => format!("`{file}` is invalid: {}, {}", plural(e, "error"), plural(w, "warning")),
    }
}
