//! `envbuild init`: see [`envbuild::init`].

use std::process::ExitCode;

use crate::cli::{InitArgs, ui};

pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let written = envbuild::init::init(&args.repo)?;
    ui::eprint_line(format!("wrote `{}` and `{}`", written.config.display(), written.dockerfile.display()));
    ui::eprint_line("next: edit `install`, then run `envbuild validate`");
    Ok(ExitCode::SUCCESS)
}
