//! `envbuild serve` and `envbuild token`: command-line glue around [`envbuild::serve`].

use std::process::ExitCode;

use anyhow::Context;
use envbuild::serve::{self, Limits, ServeOptions, ShutdownSignals, auth};
use envbuild::store;

use crate::cli::{self, GlobalArgs, RoleArg, ServeArgs, TokenCommand, output, ui};

fn size(text: &str, flag: &str) -> anyhow::Result<u64> {
    store::parse_size(text).with_context(|| format!("{flag} is not a size: `{text}` (try 128M, 1G)"))
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = auth::Tokens::load(&args.tokens)?;
    let store = store::open(&cli::store_options(global, None)?).await?;
    let options = ServeOptions {
        limits: Limits {
            manifest: size(&args.max_manifest, "--max-manifest")?,
            object: size(&args.max_object, "--max-object")?,
        },
        shutdown_grace: args.shutdown_grace,
        manifest_cache_bytes: usize::try_from(size(&args.manifest_cache, "--manifest-cache")?)
            .unwrap_or(usize::MAX),
        timeouts: serve::conn::Timeouts { header: args.header_timeout, body: args.body_timeout },
        connections: serve::conn::ConnectionLimits { per_client: args.max_connections_per_client.max(1) },
    };
    // Signals are caught from before the address is announced.
    let signals = ShutdownSignals::new()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().context("cannot read the address listened on")?;
    ui::eprint_line(format!("serving {} on http://{address} (Ctrl-C stops)", store.location()));
    output::line(format!("http://{address}"))?;
    serve::run(listener, signals.wait(), store, tokens, options).await?;
    Ok(ExitCode::SUCCESS)
}

pub fn token(command: &TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::New(args) => {
            let role = match args.role {
                RoleArg::Read => auth::Role::Read,
                RoleArg::Write => auth::Role::Write,
                RoleArg::Admin => auth::Role::Admin,
            };
            let token = auth::add(&args.tokens, role, args.label.as_deref())
                .with_context(|| format!("cannot add a token to `{}`", args.tokens.display()))?;
            output::line(token)?;
            ui::eprint_line(format!(
                "added a `{}` token to {}; it is shown only this once",
                role.as_str(),
                args.tokens.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}
