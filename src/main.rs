//! The `envbuild` binary: parses the command line, sets up logging, runs one command of the
//! `envbuild` library, and prints its result.
//!
//! Exit status: 0 on success, 1 on failure, 2 on a usage error (clap's own code), 130 when
//! interrupted. Errors are printed once, on stderr, as `error: ...` with their chain of causes
//! and the hints last. A closed stdout (`envbuild ls | head -1`) ends the command quietly with
//! status 0, as `cat` does.

// A binary has no public API: `pub` inside its modules means "used by other modules".
#![allow(unreachable_pub)]

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, commands, ui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(&cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(err) if closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if is_interrupted(&err) => {
            ui::eprint_line(
                "interrupted: everything this command created was removed; nothing was published",
            );
            ExitCode::from(130)
        }
        Err(err) => {
            ui::eprint_line(format!("error: {}", render_error(&err)));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    // Ctrl-C and SIGTERM cancel the workflow, which removes what it created and returns
    // `Interrupted`; what a fetch stages beside its target is noted in a journal, so `gc`
    // removes what a process killed outright leaves.
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        interrupt().await;
        on_signal.cancel();
    });
    envbuild_cache::staging::set_journal(envbuild::store::default_location().join("staging"));
    let global = &cli.global;
    // Commands without cleanup of their own stop where they are: dropping their future drops
    // their staging guards, which remove what they wrote.
    let stoppable = |work| cancellable(&cancel, work);
    match &cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Schema => commands::schema::run(),
        Command::Init(args) => commands::init::run(args),
        Command::Import(args) => stoppable(Box::pin(commands::import::run(global, args, &cancel))).await,
        Command::Fetch(args) => stoppable(Box::pin(commands::fetch::run(global, args, &cancel))).await,
        Command::Ls(args) => commands::ls::run(global, args, &cancel).await,
        Command::Inspect(args) => commands::inspect::run(global, args, &cancel).await,
        Command::Diff(args) => commands::diff::run(global, args, &cancel).await,
        Command::Verify(args) => stoppable(Box::pin(commands::verify::run(global, args, &cancel))).await,
        Command::Gc(args) => commands::gc::run(global, args, &cancel).await,
        Command::Rm(args) => commands::retention::rm(global, args, &cancel).await,
        Command::Prune(args) => commands::retention::prune(global, args, &cancel).await,
        Command::Build(args) => commands::build::run(global, args, &cancel).await,
        Command::Key(args) => commands::key::run(global, args, &cancel).await,
        Command::Explain(args) => commands::explain::run(global, args, &cancel).await,
        Command::Secrets(command) => commands::secrets::run(global, command, &cancel).await,
        Command::Boot(args) => commands::boot::run(global, args, &cancel).await,
        Command::Ps(args) => commands::envs::ps(global, args, &cancel).await,
        Command::Logs(args) => commands::envs::logs(global, args, &cancel).await,
        Command::Stop(args) => commands::envs::stop(global, args, &cancel).await,
        Command::Exec(args) => commands::envs::exec(global, args, &cancel).await,
        Command::Shell(args) => commands::envs::shell(global, args, &cancel).await,
        Command::Push(args) => commands::transfer::push(global, args, &cancel).await,
        Command::Pull(args) => commands::transfer::pull(global, args, &cancel).await,
        Command::Serve(args) => commands::serve::run(global, args).await,
        Command::Token(command) => commands::serve::token(command),
    }
}

/// The first of Ctrl-C (SIGINT) and SIGTERM.
async fn interrupt() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

type Work<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<ExitCode>> + 'a>>;

/// `work`, or `Interrupted` as soon as `cancel` fires (dropping `work` first).
async fn cancellable(cancel: &CancellationToken, work: Work<'_>) -> anyhow::Result<ExitCode> {
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(envbuild::Error::Interrupted.into()),
    }
}

/// Whether the error is a write to a closed stdout (the reader went away).
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| matches!(cause.downcast_ref::<envbuild::Error>(), Some(envbuild::Error::Interrupted)))
}

/// `outer: inner: innermost`, then each `hint:` line of any of them, in order.
fn render_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut hints = Vec::new();
    for (i, cause) in err.chain().enumerate() {
        let message = cause.to_string();
        let (body, hint) = match message.split_once("\nhint: ") {
            Some((body, hint)) => (body.to_owned(), Some(hint.to_owned())),
            None => (message, None),
        };
        // A cause that repeats the message around it (a transparent wrapper) adds nothing.
        if text.ends_with(&body) {
            continue;
        }
        if i > 0 && !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&body);
        hints.extend(hint);
    }
    for hint in hints {
        text.push_str("\nhint: ");
        text.push_str(&hint);
    }
    text
}

/// Log lines pass the same redaction as everything else this process prints.
#[derive(Debug, Clone, Copy)]
struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one whole event per call, so a value is never split here.
        let masked = envbuild_secrets::redact::mask(&String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    const OURS: [&str; 5] =
        ["envbuild", "envbuild_schema", "envbuild_cache", "envbuild_secrets", "envbuild_builder"];
    let default = match verbose {
        // Our warnings, others' errors: the AWS SDK warns at length (with Debug dumps) about
        // every credential provider it tries, which the error we print already sums up.
        0 => format!("error,{}", OURS.map(|c| format!("{c}=warn")).join(",")),
        1 => format!("info,{}", OURS.map(|c| format!("{c}=debug")).join(",")),
        _ => "trace".to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a service's log usually goes to a file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| MaskedStderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
