//! `envbuild inspect`: one snapshot's manifest, summarized or whole.

use std::collections::BTreeMap;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, InspectArgs, output};
use envbuild::format;

pub async fn run(
    global: &GlobalArgs,
    args: &InspectArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let store = session.store.clone();
    let (id, manifest) = envbuild::snapshots::find(&*store, &args.snapshot).await?;
    if args.json {
        output::json(&serde_json::json!({ "id": id, "manifest": manifest }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let unique = manifest.unique_chunks();
    let stored: u64 = unique.iter().map(|c| c.stored_size).sum();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &manifest.toc {
        *kinds.entry(entry.kind.as_str()).or_default() += 1;
    }
    let kinds = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ");
    #[allow(clippy::cast_precision_loss)]
    let ratio = if stored == 0 { 1.0 } else { manifest.size as f64 / stored as f64 };
    let c = manifest.chunking;
    output::line(format!("snapshot     {id}"))?;
    output::line(format!(
        "size         {} in {} entries ({kinds})",
        format::bytes(manifest.size),
        manifest.toc.len()
    ))?;
    output::line(format!(
        "chunks       {} ({} distinct), stored {} ({ratio:.2}x smaller)",
        manifest.chunks.len(),
        unique.len(),
        format::bytes(stored)
    ))?;
    output::line(format!(
        "format       {}, fastcdc-2020 {}/{}/{}, zstd level {}",
        manifest.format,
        format::bytes(u64::from(c.min)),
        format::bytes(u64::from(c.avg)),
        format::bytes(u64::from(c.max)),
        manifest.compression.level
    ))?;
    for (label, doc) in
        [("image", &manifest.image_config), ("environment", &manifest.environment), ("keys", &manifest.keys)]
    {
        if let Some(doc) = doc {
            output::line(format!("{label:<12} {}", serde_json::to_string(doc)?))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
