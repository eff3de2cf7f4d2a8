//! `envbuild serve` and `envbuild token`: command-line glue around [`crate::serve`].

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, ServeArgs, TokenCommand};
use crate::serve::{self, Limits, ServeOptions, auth};
use crate::{output, store, ui};

fn size(text: &str, flag: &str) -> anyhow::Result<u64> {
    store::parse_size(text).with_context(|| format!("{flag} is not a size: `{text}` (try 128M, 1G)"))
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = auth::Tokens::load(&args.tokens)
        .with_context(|| format!("cannot load the tokens of `{}`", args.tokens.display()))?;
    let store = store::open(global).await?;
    let options = ServeOptions {
        listen: args.listen,
        limits: Limits {
            manifest: size(&args.max_manifest, "--max-manifest")?,
            object: size(&args.max_object, "--max-object")?,
        },
        shutdown_grace: args.shutdown_grace,
        manifest_cache_bytes: usize::try_from(size(&args.manifest_cache, "--manifest-cache")?)
            .unwrap_or(usize::MAX),
    };
    let location = store.location();
    serve::run(store, tokens, options, |address| {
        ui::eprint_line(format!("serving {location} on http://{address} (Ctrl-C stops)"));
        output::line(format!("http://{address}"));
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub fn token(command: &TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::New(args) => {
            let token = auth::add(&args.tokens, args.role, args.label.as_deref())
                .with_context(|| format!("cannot add a token to `{}`", args.tokens.display()))?;
            output::line(token);
            ui::eprint_line(format!(
                "added a `{}` token to {}; it is shown only this once",
                args.role.as_str(),
                args.tokens.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}
