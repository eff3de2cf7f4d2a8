//! The `envbuild` binary: parses the command line, sets up logging and runs one command.
//!
//! Exit status: 0 on success, 1 on failure, 2 on a usage error (clap's own code). Errors are
//! printed once, on stderr, as `error: ...` with their chain of causes.

// A binary has no public API: `pub` inside its modules means "used by other modules".
#![allow(unreachable_pub)]

mod bridge;
mod cli;
mod commands;
mod env;
mod export;
mod format;
mod output;
mod progress;
mod secrets;
mod serve;
mod store;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(&cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            ui::eprint_line(format!("error: {}", render_error(&err)));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match &cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Schema => commands::schema::run(),
        Command::Init(args) => commands::init::run(args),
        Command::Import(args) => commands::import::run(global, args).await,
        Command::Fetch(args) => commands::fetch::run(global, args).await,
        Command::Ls(args) => commands::ls::run(global, args).await,
        Command::Inspect(args) => commands::inspect::run(global, args).await,
        Command::Diff(args) => commands::diff::run(global, args).await,
        Command::Verify(args) => commands::verify::run(global, args).await,
        Command::Gc(args) => commands::gc::run(global, args).await,
        Command::Build(args) => commands::build::run(global, args).await,
        Command::Key(args) => commands::key::run(global, args).await,
        Command::Explain(args) => commands::explain::run(global, args).await,
        Command::Secrets(command) => commands::secrets::run(global, command).await,
        Command::Boot(args) => commands::boot::run(global, args).await,
        Command::Ps(args) => commands::envs::ps(args).await,
        Command::Logs(args) => commands::envs::logs(global, args).await,
        Command::Stop(args) => commands::envs::stop(args).await,
        Command::Push(args) => commands::transfer::push(global, args).await,
        Command::Pull(args) => commands::transfer::pull(global, args).await,
        Command::Serve(args) => commands::serve::run(global, args).await,
        Command::Token(command) => commands::serve::token(command),
    }
}

/// Chunks handled at once: `--jobs`, or twice the number of cores.
fn jobs(global: &cli::GlobalArgs) -> usize {
    global.jobs.map_or_else(envbuild_cache::ingest::default_concurrency, usize::from)
}

/// `outer: inner: innermost`, with `hint:` lines kept on their own lines.
fn render_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // Our warnings, others' errors: the AWS SDK warns at length (with Debug dumps) about
        // every credential provider it tries, which the error we print already sums up.
        0 => "error,envbuild=warn,envbuild_schema=warn,envbuild_cache=warn,envbuild_builder=warn",
        1 => "envbuild=debug,envbuild_schema=debug,envbuild_cache=debug,envbuild_builder=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a service's log usually goes to a file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
