//! `envbuild fetch`: a snapshot out of the store, as a directory or a tar stream.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use envbuild_cache::extract::ExtractOptions;
use envbuild_cache::ingest::Progress;
use envbuild_cache::{catalog, restore};

use crate::cli::{FetchArgs, GlobalArgs};
use crate::{format, progress, store, ui};

pub async fn run(global: &GlobalArgs, args: &FetchArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(global).await?;
    let id = catalog::resolve(&*store, &args.snapshot).await?;
    let manifest = restore::read_manifest(&*store, &id).await?;
    let counters = Arc::new(Progress::default());
    let jobs = crate::jobs(global);
    let started = Instant::now();
    if let Some(repo_tag) = &args.docker {
        let engine = envbuild_builder::docker::DockerEngine::connect().await?;
        let engine: Arc<dyn envbuild_builder::engine::ContainerEngine> = Arc::new(engine);
        let config = manifest.image_config.as_ref().map(envbuild_builder::oci::from_json).unwrap_or_default();
        let labels = std::collections::BTreeMap::from([(
            envbuild_builder::pipeline::SNAPSHOT_LABEL.to_owned(),
            id.to_string(),
        )]);
        let rootfs = crate::bridge::snapshot_stream(store, &manifest, jobs);
        let image = engine
            .import(rootfs, repo_tag, &config, &labels)
            .await
            .with_context(|| format!("cannot load snapshot {id} into the Docker engine as `{repo_tag}`"))?;
        ui::eprint_line(format!(
            "loaded {id} into the Docker engine as `{repo_tag}` ({image}) in {}",
            format::duration(started.elapsed())
        ));
        crate::output::line(image);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.oci {
        let layout = crate::export::oci_layout(store, &manifest, dir, &args.oci_ref, jobs).await?;
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
        let size = crate::export::ext4(store, &manifest, file, args.headroom, jobs).await?;
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
        let bar = progress::Bar::start(&counters, "fetching");
        let report = restore::fetch_to_dir(store, &manifest, dir, ExtractOptions::default(), jobs, counters)
            .await
            .with_context(|| format!("cannot restore snapshot {id} into `{}`", dir.display()))?;
        drop(bar);
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
    if target == "-" {
        restore::write_tar(store, &manifest, std::io::stdout(), jobs, counters)
            .await
            .with_context(|| format!("cannot write snapshot {id} to stdout"))?;
        return Ok(ExitCode::SUCCESS);
    }
    // Written beside the target and renamed at the end, so a failure leaves no partial file.
    let path = std::path::Path::new(target);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let partial = tempfile::Builder::new()
        .prefix(".envbuild-fetch-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in `{}`", dir.display()))?;
    let file = partial.reopen().context("cannot open the temporary file")?;
    let bar = progress::Bar::start(&counters, "fetching");
    restore::write_tar(store, &manifest, file, jobs, counters)
        .await
        .with_context(|| format!("cannot write snapshot {id} to `{target}`"))?;
    drop(bar);
    partial.persist(path).with_context(|| format!("cannot move the tar into `{target}`"))?;
    ui::eprint_line(format!(
        "wrote {id} to `{target}`: {} in {}",
        format::bytes(manifest.size),
        format::duration(started.elapsed())
    ));
    Ok(ExitCode::SUCCESS)
}
