//! The image configuration a snapshot carries, in the OCI image format (`oci-spec`'s
//! `Config`: Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts), so a snapshot can become an
//! image again with the same defaults.

use oci_spec::image::{Config, ConfigBuilder};

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
pub fn to_json(config: &ImageConfig) -> serde_json::Value {
    serde_json::to_value(to_oci(config)).unwrap_or(serde_json::Value::Null)
}

/// The configuration from a manifest's JSON; unreadable JSON gives the empty configuration.
pub fn from_json(value: &serde_json::Value) -> ImageConfig {
    serde_json::from_value::<Config>(value.clone()).map(|c| from_oci(&c)).unwrap_or_default()
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
        let json = to_json(&config);
        assert_eq!(json["WorkingDir"], "/workspace");
        assert_eq!(json["ExposedPorts"]["8080/tcp"], serde_json::json!({}));
        assert_eq!(from_json(&json), config);
    }
}
