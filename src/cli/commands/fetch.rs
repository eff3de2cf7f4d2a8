//! `envbuild fetch`: a snapshot out of the store, in the form asked for.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use envbuild::{export, format, snapshots};
use envbuild_cache::ingest::Progress;
use envbuild_cache::restore;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, FetchArgs, GlobalArgs, output, ui};

pub async fn run(
    global: &GlobalArgs,
    args: &FetchArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let store = session.store.clone();
    let (id, manifest) = envbuild::snapshots::find(&*store, &args.snapshot).await?;
    let started = Instant::now();
    if let Some(repo_tag) = &args.docker {
        let image = export::to_docker(&session, &id, &manifest, repo_tag).await?;
        ui::eprint_line(format!(
            "loaded {id} into the Docker engine as `{repo_tag}` ({image}) in {}",
            format::duration(started.elapsed())
        ));
        output::line(image)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.oci {
        let layout =
            export::oci_layout(store, &id, &manifest, dir, &args.oci_ref, args.force, session.jobs).await?;
        ui::eprint_line(format!(
            "wrote {id} as an OCI image layout in `{}` (`{}`, manifest {}, layer {}) in {}",
            dir.display(),
            args.oci_ref,
            layout.manifest_digest,
            format::bytes(layout.layer_size),
            format::duration(started.elapsed())
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(file) = &args.ext4 {
        let size = export::ext4(store, &manifest, file, args.headroom, args.force, session.jobs).await?;
        ui::eprint_line(format!(
            "wrote {id} as an ext4 image `{}` of {} ({} of files, {}% headroom) in {}",
            file.display(),
            format::bytes(size),
            format::bytes(manifest.size),
            args.headroom,
            format::duration(started.elapsed())
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.to {
        let report = snapshots::fetch_to_dir(&session, &id, &manifest, dir, args.force).await?;
        for warning in &report.warnings {
            ui::eprint_line(format!("warning: {warning}"));
        }
        ui::eprint_line(format!(
            "restored {id} into `{}`: {} files ({}), {} directories, {} symlinks, {} hard links, {} special files, in {}",
            dir.display(),
            report.files,
            format::bytes(report.bytes),
            report.directories,
            report.symlinks,
            report.hardlinks,
            report.devices + report.fifos,
            format::duration(started.elapsed()),
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.tar.as_deref().unwrap_or("-");
    let counters = Arc::new(Progress::default());
    if target == "-" {
        restore::write_tar(store, &manifest, std::io::stdout(), session.jobs, counters)
            .await
            .with_context(|| format!("cannot write snapshot {id} to stdout"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let bar = cli::progress::Bar::start(&counters, "fetching");
    export::tar_file(store, &manifest, std::path::Path::new(target), args.force, session.jobs, counters)
        .await
        .with_context(|| format!("cannot write snapshot {id} to `{target}`"))?;
    drop(bar);
    ui::eprint_line(format!(
        "wrote {id} to `{target}`: {} in {}",
        format::bytes(manifest.size),
        format::duration(started.elapsed())
    ));
    Ok(ExitCode::SUCCESS)
}
