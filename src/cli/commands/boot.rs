//! `envbuild boot`: arguments to [`envbuild::boot::boot`], and its report printed.

use std::process::ExitCode;

use envbuild::boot::{self, BootOptions, EngineChoice, Target};
use envbuild_builder::engine::Network;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, BootArgs, BootNetworkArg, EngineArg, GlobalArgs, output};

pub async fn run(
    global: &GlobalArgs,
    args: &BootArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let target = match (&args.snapshot, &args.key) {
        (Some(query), _) => Target::Snapshot(query.clone()),
        (None, Some(key)) => Target::Key(key.parse()?),
        (None, None) => anyhow::bail!("give a snapshot id or --key"),
    };
    let options = BootOptions {
        target,
        repo: args.repo.clone(),
        name: args.name.clone(),
        groups: args.groups.clone(),
        network: match args.network {
            BootNetworkArg::Private => Network::Private,
            BootNetworkArg::Host => Network::Host,
            BootNetworkArg::None => Network::None,
        },
        start_wait: args.start_wait,
        engine: match args.engine {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Runc => EngineChoice::Runc,
            EngineArg::Docker => EngineChoice::Docker,
        },
        publish: args.publish.clone(),
        ready_wait: (!args.no_wait).then_some(args.ready_timeout),
    };
    let report = boot::boot(&session, &options).await?;
    if args.json {
        output::json(&report)?;
    } else {
        output::line(&report.name)?;
    }
    Ok(ExitCode::SUCCESS)
}
