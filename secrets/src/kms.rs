//! AWS KMS as the key-encryption key: the only place that imports aws-sdk-kms.

use aws_sdk_kms::Client;
use aws_sdk_kms::config::BehaviorVersion;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::envelope::{Binding, DataKey, KekRef, KeyEncryptionKey, undecryptable};
use crate::error::{Result, SecretError};

/// Overrides of the AWS environment, as the S3 store has.
#[derive(Debug, Clone, Default)]
pub struct KmsOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub static_credentials: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct KmsKey {
    client: Client,
    key_id: String,
}

impl KmsKey {
    /// A KMS key (id, ARN or alias); settings from the AWS environment.
    pub async fn new(key_id: &str, options: &KmsOptions) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .operation_timeout(std::time::Duration::from_secs(30))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(endpoint) = &options.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &options.region {
            loader = loader.region(aws_sdk_kms::config::Region::new(region.clone()));
        }
        if let Some((key, secret)) = &options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_kms::config::Credentials::new(
                key, secret, None, None, "envbuild",
            ));
        }
        let sdk = loader.load().await;
        Self { client: Client::new(&sdk), key_id: key_id.to_owned() }
    }

    /// Creates a key in the KMS (for tests against a fresh server); returns its id.
    pub async fn create_for_tests(options: &KmsOptions) -> Result<String> {
        let key = Self::new("", options).await;
        let created =
            key.client.create_key().send().await.map_err(|e| SecretError::kms_from("CreateKey failed", e))?;
        created
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| SecretError::kms("no key id came back"))
    }

    /// The same KMS client for another key id (decrypting uses the id the record names).
    #[must_use]
    pub fn with_key_id(&self, key_id: &str) -> Self {
        Self { client: self.client.clone(), key_id: key_id.to_owned() }
    }
}

#[async_trait]
impl KeyEncryptionKey for KmsKey {
    fn reference(&self) -> KekRef {
        KekRef { kind: "kms".to_owned(), key_id: self.key_id.clone() }
    }

    async fn new_data_key(&self, binding: &Binding) -> Result<DataKey> {
        let mut request = self.client.generate_data_key().key_id(&self.key_id).key_spec(DataKeySpec::Aes256);
        for (k, v) in binding.kms_context() {
            request = request.encryption_context(k, v);
        }
        let out = request.send().await.map_err(|e| {
            SecretError::kms_from(format!("GenerateDataKey with `{}` failed", self.key_id), e)
        })?;
        let plain = out.plaintext().ok_or_else(|| SecretError::kms("GenerateDataKey returned no key"))?;
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| SecretError::kms("GenerateDataKey returned no wrapped key"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.as_ref().len() != 32 {
            return Err(SecretError::kms("GenerateDataKey returned a key of the wrong size"));
        }
        key.copy_from_slice(plain.as_ref());
        Ok((key, blob.as_ref().to_vec()))
    }

    async fn unwrap_key(&self, wrapped: &[u8], binding: &Binding) -> Result<Zeroizing<[u8; 32]>> {
        let mut request = self.client.decrypt().key_id(&self.key_id).ciphertext_blob(Blob::new(wrapped));
        for (k, v) in binding.kms_context() {
            request = request.encryption_context(k, v);
        }
        match request.send().await {
            Ok(out) => {
                let plain = out.plaintext().ok_or_else(|| undecryptable(binding, "KMS returned no key"))?;
                let mut key = Zeroizing::new([0u8; 32]);
                if plain.as_ref().len() != 32 {
                    return Err(undecryptable(binding, "KMS returned a key of the wrong size"));
                }
                key.copy_from_slice(plain.as_ref());
                Ok(key)
            }
            Err(e) if e.as_service_error().is_some() => Err(undecryptable(
                binding,
                &format!(
                    "KMS refused it ({}: {}): it belongs to another name, scope or version, or another key",
                    e.code().unwrap_or("no code"),
                    e.message().unwrap_or("no message")
                ),
            )),
            Err(e) => {
                Err(SecretError::kms_from(format!("cannot reach KMS to decrypt `{}`", binding.name), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{open, seal};
    use crate::scope::{Scope, When};
    use envbuild_schema::SecretString;

    fn binding(name: &str, scope: &str, version: u64) -> Binding {
        Binding { name: name.into(), scope: scope.parse().unwrap(), version }
    }

    /// moto's KMS, when the run has it (`scripts/test` starts it and requires it).
    fn moto() -> Option<KmsOptions> {
        let Ok(endpoint) = std::env::var("ENVBUILD_TEST_MOTO") else {
            assert!(
                std::env::var_os("ENVBUILD_TEST_REQUIRE_SERVERS").is_none(),
                "ENVBUILD_TEST_MOTO is not set, but this run requires the servers"
            );
            return None;
        };
        Some(KmsOptions {
            endpoint_url: Some(endpoint),
            region: Some("us-east-1".into()),
            static_credentials: Some(("test".into(), "test".into())),
        })
    }

    #[tokio::test]
    async fn kms_round_trip_and_refusals() {
        let Some(options) = moto() else { return };
        let kek = KmsKey::new(&KmsKey::create_for_tests(&options).await.unwrap(), &options).await;
        let value = SecretString::new("postgres://app:s3cr3t-p4ss@db/app".into());
        let record = seal(
            &kek,
            &binding("DB_URL", "env:core", 3),
            &crate::envelope::tests::meta(When::Both, true),
            &value,
        )
        .await
        .unwrap();
        assert_eq!(record.kek.kind, "kms");
        assert!(!serde_json::to_string(&record).unwrap().contains("s3cr3t"), "the record holds no plaintext");
        let group: Scope = "env:core".parse().unwrap();
        assert_eq!(open(&kek, &record, &group, "DB_URL").await.unwrap(), value);

        // The encryption context binds name, scope and version: KMS refuses the data key.
        for (scope, name, version) in
            [("workspace", "DB_URL", 3), ("env:core", "OTHER", 3), ("env:core", "DB_URL", 4)]
        {
            let mut moved = record.clone();
            moved.version = version;
            let err = open(&kek, &moved, &scope.parse().unwrap(), name).await.unwrap_err();
            assert!(matches!(err, SecretError::Undecryptable { .. }), "{scope} {name} {version}: {err}");
        }
        // Another KMS key does not open it.
        let stranger = KmsKey::new(&KmsKey::create_for_tests(&options).await.unwrap(), &options).await;
        assert!(open(&stranger, &record, &group, "DB_URL").await.is_err());

        // KMS down: an error that names the secret, and no value.
        let down = KmsOptions { endpoint_url: Some("http://127.0.0.1:9".into()), ..options };
        let unreachable = KmsKey::new(&kek.reference().key_id, &down).await;
        let err = open(&unreachable, &record, &group, "DB_URL").await.unwrap_err();
        assert!(matches!(err, SecretError::Kms { .. }) && err.to_string().contains("`DB_URL`"), "{err}");
    }
}
