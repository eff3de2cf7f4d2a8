//! The OCI image format: the configuration a snapshot carries (`oci-spec`'s `Config`: Env,
//! WorkingDir, User, Entrypoint, Cmd, ExposedPorts), so a snapshot can become an image again
//! with the same defaults; and writing a snapshot as an OCI image layout directory
//! (`fetch --oci`), which skopeo, podman and containerd load; and the image documents
//! (configuration and manifest) a snapshot is served as by `envbuild serve`'s registry API.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use envbuild_schema::Digest;
use envbuild_schema::digest::Hasher;
use oci_spec::image::{Config, ConfigBuilder};

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

/// Media types of the documents and layers envbuild serves and writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A blob as a manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
}

impl Blob {
    pub fn of(bytes: &[u8]) -> Self {
        Self { digest: Digest::of(bytes), size: bytes.len() as u64 }
    }
}

/// The one layer of a snapshot's image: its media type, the blob, and the digest of its
/// uncompressed tar (the `diff_id`).
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub media_type: &'static str,
    pub blob: Blob,
    pub diff_id: Digest,
}

/// A snapshot's image: the configuration blob and the manifest, as exact bytes.
#[derive(Debug, Clone)]
pub struct ImageDocuments {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl ImageDocuments {
    pub fn config_blob(&self) -> Blob {
        Blob::of(&self.config)
    }

    pub fn manifest_blob(&self) -> Blob {
        Blob::of(&self.manifest)
    }
}

// The documents are serialized from these structs, not from `oci-spec`'s builders, so their
// bytes, and so their digests, depend only on this file: a digest a client pinned stays valid
// across envbuild versions (a test pins them).

#[derive(serde::Serialize)]
struct ImageJson<'a> {
    architecture: &'a str,
    os: &'a str,
    config: ConfigJson<'a>,
    rootfs: RootFsJson,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
struct RootFsJson {
    #[serde(rename = "type")]
    typ: &'static str,
    diff_ids: [Digest; 1],
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    schema_version: u32,
    media_type: &'static str,
    config: DescriptorJson,
    layers: [DescriptorJson; 1],
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: &'static str,
    digest: Digest,
    size: u64,
}

/// The architecture images of this host declare, in OCI's words.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        _ => "amd64",
    }
}

/// The configuration and manifest of a one-layer image of `config` with `labels`.
pub fn documents(
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
    layer: Layer,
) -> Result<ImageDocuments> {
    let image = ImageJson {
        architecture: architecture(),
        os: "linux",
        config: ConfigJson {
            user: config.user.as_deref(),
            exposed_ports: config
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), serde_json::Map::new()))
                .collect(),
            env: &config.env,
            entrypoint: config.entrypoint.as_deref(),
            cmd: config.cmd.as_deref(),
            working_dir: config.working_dir.as_deref(),
            labels,
        },
        rootfs: RootFsJson { typ: "layers", diff_ids: [layer.diff_id] },
    };
    let config = serde_json::to_vec(&image).map_err(oci_error)?;
    let config_blob = Blob::of(&config);
    let manifest = ManifestJson {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: DescriptorJson {
            media_type: CONFIG_MEDIA_TYPE,
            digest: config_blob.digest,
            size: config_blob.size,
        },
        layers: [DescriptorJson {
            media_type: layer.media_type,
            digest: layer.blob.digest,
            size: layer.blob.size,
        }],
    };
    let manifest = serde_json::to_vec(&manifest).map_err(oci_error)?;
    Ok(ImageDocuments { config, manifest })
}

fn oci_error(e: impl std::error::Error + Send + Sync + 'static) -> BuildError {
    BuildError::ImageConfig { what: "cannot be described as an OCI image".to_owned(), source: Box::new(e) }
}

/// Writes `bytes` as a blob.
fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Blob> {
    let blob = Blob::of(bytes);
    std::fs::write(blobs.join(blob.digest.hex()), bytes)
        .map_err(BuildError::io(format!("cannot write a blob in `{}`", blobs.display())))?;
    Ok(blob)
}

/// Writes an OCI image layout into the empty directory `dir`: the root file system `rootfs`
/// as one uncompressed layer, `config` and `labels` as the image configuration, tagged
/// `reference`. The documents are those `envbuild serve` offers for the snapshot's
/// uncompressed variant, so the manifest digests agree.
pub fn write_layout(
    dir: &Path,
    rootfs: &mut dyn Read,
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
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
    let layer_digest = hasher.finish();
    layer
        .persist(blobs.join(layer_digest.hex()))
        .map_err(|e| BuildError::io("cannot write the layer blob")(e.error))?;
    let blob = Blob { digest: layer_digest, size: layer_size };
    let docs = documents(config, labels, Layer { media_type: TAR_LAYER, blob, diff_id: layer_digest })?;
    write_blob(&blobs, &docs.config)?;
    let manifest = write_blob(&blobs, &docs.manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    });
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(BuildError::io(format!("cannot write `{name}`")))
    };
    write("index.json", &serde_json::to_vec(&index).map_err(oci_error)?)?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Layout {
        manifest_digest: manifest.digest.to_string(),
        layer_digest: layer_digest.to_string(),
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

    /// The documents' bytes are what clients pin by digest: a change here breaks every
    /// digest handed out before it, so it must be deliberate (and this test updated).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn documents_are_pinned() {
        let config = ImageConfig {
            env: vec!["PATH=/bin".into()],
            working_dir: Some("/workspace".into()),
            user: Some("1000:1000".into()),
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            exposed_ports: vec!["3000/tcp".into()],
        };
        let labels = BTreeMap::from([("envbuild.snapshot".to_owned(), "sha256:00".to_owned())]);
        let tar = Blob::of(b"tar");
        let docs =
            documents(&config, &labels, Layer { media_type: TAR_LAYER, blob: tar, diff_id: tar.digest })
                .unwrap();
        assert_eq!(
            String::from_utf8(docs.config.clone()).unwrap(),
            format!(
                concat!(
                    r#"{{"architecture":"amd64","os":"linux","config":{{"User":"1000:1000","ExposedPorts":{{"3000/tcp":{{}}}},"#,
                    r#""Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/workspace","Labels":{{"envbuild.snapshot":"sha256:00"}}}},"#,
                    r#""rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#
                ),
                tar.digest
            )
        );
        assert_eq!(
            docs.manifest_blob().digest.to_string(),
            "sha256:da17527700a53fd2d4b2b7f9e1aca3b61d0f7073065dfdf75a9b8bc8571425b0"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&docs.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], tar.digest.to_string());
        assert_eq!(manifest["config"]["digest"], docs.config_blob().digest.to_string());
        assert_eq!(manifest["config"]["size"], docs.config.len());
    }

    #[test]
    fn bad_json_is_an_error_naming_the_field() {
        let err = from_json(&serde_json::json!({"Env": ["A=1", 7]})).unwrap_err();
        assert!(err.to_string().contains("`Env[1]`"), "{err}");
        let err = from_json(&serde_json::json!({"WorkingDir": ["/x"]})).unwrap_err();
        assert!(err.to_string().contains("`WorkingDir`"), "{err}");
    }
}
