//! The OCI image format: the configuration a snapshot carries (`oci-spec`'s `Config`: Env,
//! WorkingDir, User, Entrypoint, Cmd, ExposedPorts), so a snapshot can become an image again
//! with the same defaults; and writing a snapshot as an OCI image layout directory
//! (`fetch --oci`), which skopeo, podman and containerd load.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use envbuild_schema::Digest;
use envbuild_schema::digest::Hasher;
use oci_spec::image::{
    Arch, Config, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder, Sha256Digest,
};

use crate::error::{BuildError, Result};

use crate::engine::ImageConfig;

/// The OCI form of `config`.
pub fn to_oci(config: &ImageConfig) -> Config {
    let mut builder = ConfigBuilder::default();
    if !config.env.is_empty() {
        builder = builder.env(config.env.clone());
    }
    if let Some(dir) = &config.working_dir {
        builder = builder.working_dir(dir.clone());
    }
    if let Some(user) = &config.user {
        builder = builder.user(user.clone());
    }
    if let Some(entrypoint) = &config.entrypoint {
        builder = builder.entrypoint(entrypoint.clone());
    }
    if let Some(cmd) = &config.cmd {
        builder = builder.cmd(cmd.clone());
    }
    if !config.exposed_ports.is_empty() {
        builder = builder.exposed_ports(config.exposed_ports.clone());
    }
    // Every field is optional, so building cannot fail.
    builder.build().unwrap_or_default()
}

/// Back from the OCI form.
pub fn from_oci(config: &Config) -> ImageConfig {
    ImageConfig {
        env: config.env().clone().unwrap_or_default(),
        working_dir: config.working_dir().clone(),
        user: config.user().clone(),
        entrypoint: config.entrypoint().clone(),
        cmd: config.cmd().clone(),
        exposed_ports: config.exposed_ports().clone().unwrap_or_default(),
    }
}

/// The configuration as the JSON a manifest stores.
pub fn to_json(config: &ImageConfig) -> Result<serde_json::Value> {
    serde_json::to_value(to_oci(config))
        .map_err(|e| BuildError::ImageConfig { what: "cannot be encoded".to_owned(), source: Box::new(e) })
}

/// The configuration from a manifest's JSON. JSON that is not an image configuration is an
/// error naming the field (`Env[2]`, `ExposedPorts`), never an empty configuration: booting
/// with the image's environment silently dropped would be worse than not booting.
pub fn from_json(value: &serde_json::Value) -> Result<ImageConfig> {
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        BuildError::ImageConfig {
            what: format!("is unreadable at `{field}`"),
            source: Box::new(e.into_inner()),
        }
    })?;
    Ok(from_oci(&config))
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Layout {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
}

fn oci_error(e: impl std::error::Error + Send + Sync + 'static) -> BuildError {
    BuildError::ImageConfig { what: "cannot be described as an OCI image".to_owned(), source: Box::new(e) }
}

/// Writes `bytes` as a blob; returns its descriptor parts (hex digest, size).
fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let hex = Digest::of(bytes).hex();
    std::fs::write(blobs.join(&hex), bytes)
        .map_err(BuildError::io(format!("cannot write a blob in `{}`", blobs.display())))?;
    Ok((hex, bytes.len() as u64))
}

fn descriptor(media_type: MediaType, hex: &str, size: u64) -> Result<Descriptor> {
    let digest = Sha256Digest::from_str(hex).map_err(oci_error)?;
    Ok(Descriptor::new(media_type, size, digest))
}

/// Writes an OCI image layout into the empty directory `dir`: the root file system `rootfs`
/// as one uncompressed layer, `config` as the image configuration, tagged `reference`.
pub fn write_layout(
    dir: &Path,
    rootfs: &mut dyn Read,
    config: &ImageConfig,
    reference: &str,
) -> Result<Layout> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(BuildError::io(format!("cannot create `{}`", blobs.display())))?;
    // The layer, hashed as it is written.
    let mut layer =
        tempfile::NamedTempFile::new_in(&blobs).map_err(BuildError::io("cannot create the layer blob"))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut layer_size = 0u64;
    loop {
        let n = rootfs.read(&mut buf).map_err(BuildError::io("cannot read the snapshot"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        layer.write_all(&buf[..n]).map_err(BuildError::io("cannot write the layer blob"))?;
        layer_size += n as u64;
    }
    let layer_hex = hasher.finish().hex();
    layer
        .persist(blobs.join(&layer_hex))
        .map_err(|e| BuildError::io("cannot write the layer blob")(e.error))?;

    let arch = match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        _ => Arch::Amd64,
    };
    let rootfs_desc = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![format!("sha256:{layer_hex}")])
        .build()
        .map_err(oci_error)?;
    let image_config = ImageConfigurationBuilder::default()
        .architecture(arch)
        .os(Os::Linux)
        .config(to_oci(config))
        .rootfs(rootfs_desc)
        .build()
        .map_err(oci_error)?;
    let (config_hex, config_size) =
        write_blob(&blobs, &serde_json::to_vec(&image_config).map_err(oci_error)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_hex, config_size)?)
        .layers(vec![descriptor(MediaType::ImageLayer, &layer_hex, layer_size)?])
        .build()
        .map_err(oci_error)?;
    let (manifest_hex, manifest_size) =
        write_blob(&blobs, &serde_json::to_vec(&manifest).map_err(oci_error)?)?;
    let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_hex, manifest_size)?;
    manifest_desc.set_annotations(Some(
        [("org.opencontainers.image.ref.name".to_owned(), reference.to_owned())].into_iter().collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(oci_error)?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(BuildError::io(format!("cannot write `{name}`")))
    };
    write("index.json", &serde_json::to_vec(&index).map_err(oci_error)?)?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Layout {
        manifest_digest: format!("sha256:{manifest_hex}"),
        layer_digest: format!("sha256:{layer_hex}"),
        layer_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let config = ImageConfig {
            env: vec!["PATH=/bin".into(), "A=b c".into()],
            working_dir: Some("/workspace".into()),
            user: Some("agent".into()),
            entrypoint: Some(vec![]),
            cmd: Some(vec!["sh".into()]),
            exposed_ports: vec!["8080/tcp".into()],
        };
        let json = to_json(&config).unwrap();
        assert_eq!(json["WorkingDir"], "/workspace");
        assert_eq!(json["ExposedPorts"]["8080/tcp"], serde_json::json!({}));
        assert_eq!(from_json(&json).unwrap(), config);
    }

    #[test]
    fn bad_json_is_an_error_naming_the_field() {
        let err = from_json(&serde_json::json!({"Env": ["A=1", 7]})).unwrap_err();
        assert!(err.to_string().contains("`Env[1]`"), "{err}");
        let err = from_json(&serde_json::json!({"WorkingDir": ["/x"]})).unwrap_err();
        assert!(err.to_string().contains("`WorkingDir`"), "{err}");
    }
}
