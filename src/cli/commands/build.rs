//! `envbuild build`: arguments to [`envbuild::build::build`], and its report printed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use envbuild::build::{self, BuildOptions, RepoOptions};
use envbuild_builder::engine::Network;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, BuildArgs, GlobalArgs, NetworkArg, RepoArgs, output};

fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) =
                pair.split_once('=').with_context(|| format!("{what} `{pair}` is not NAME=VALUE"))?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

impl From<NetworkArg> for Network {
    fn from(value: NetworkArg) -> Self {
        match value {
            NetworkArg::Host => Self::Host,
            NetworkArg::None => Self::None,
        }
    }
}

/// The workflow's view of `--repo` and the flags that feed the keys.
pub fn repo_options(args: &RepoArgs) -> anyhow::Result<RepoOptions> {
    Ok(RepoOptions {
        repo: args.repo.clone(),
        inputs: args.input.clone(),
        env: parse_pairs(&args.env, "--env")?,
        build_args: parse_pairs(&args.build_arg, "--build-arg")?,
        network: args.network.into(),
        groups: args.groups.clone(),
        base_image: args.base_image.clone(),
        strict: args.strict,
    })
}

pub async fn run(
    global: &GlobalArgs,
    args: &BuildArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let options = BuildOptions {
        repo: repo_options(&args.repo)?,
        no_cache: args.no_cache,
        check_idempotent: args.check_idempotent,
        clean: args.clean,
        no_layer_cache: args.no_layer_cache,
        no_package_cache: args.no_package_cache,
    };
    let report = build::build(&session, &options).await?;
    if args.json {
        output::json(&report)?;
    } else {
        output::line(report.id)?;
    }
    let idempotent = report.idempotency.as_ref().is_none_or(|i| i.idempotent);
    Ok(if args.repo.strict && !idempotent { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
