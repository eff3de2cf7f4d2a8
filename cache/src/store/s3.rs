//! The S3 backend (feature `s3`): the only file that imports the AWS SDK.
//!
//! `s3://BUCKET/PREFIX` holds the same layout as a local store, under `PREFIX/`. Credentials,
//! region and endpoint come from the standard AWS environment and config files
//! (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL[_S3]`, ...). With a custom
//! endpoint (an S3-compatible server), path-style addressing is used, since `bucket.host`
//! names rarely resolve there; `ENVBUILD_S3_PATH_STYLE=0|1` overrides. Checksums are
//! computed only when an operation requires them (`WhenRequired`), which every
//! S3-compatible server accepts; integrity comes from envbuild's own hashes on every read.
//!
//! - Create-only writes send `If-None-Match: *`; a 412 means the object exists, which for
//!   content-addressed objects is success. Updates send `If-Match: <etag>` (a 412, or a 404 for
//!   a vanished object, is a lost race).
//! - Reads refuse objects over the caller's limit from the `Content-Length` before reading a
//!   byte, and again while streaming should the header lie.
//! - The SDK's own retries are off: the `retry` decorator retries every backend alike.
//! - [`S3Store::connect`] checks the bucket before any work starts, so a missing bucket, a
//!   missing region or bad credentials fail at once with a hint.
//! - No multipart uploads are made (objects are at most a few MB, manifests far below S3's 5 GB
//!   single-put limit), but `sweep_abandoned` aborts stale ones under the prefix, as others'
//!   tools may leave them.

use std::time::{Duration, SystemTime};

use crate::error::chain_text;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    location: String,
}

/// Options beyond what the AWS environment says; each, when set, overrides it.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Path-style addressing; `None`: on exactly when a custom endpoint is set.
    pub path_style: Option<bool>,
    /// How long to wait for a connection.
    pub connect_timeout: Option<Duration>,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// An access key id and secret, instead of the AWS credential chain.
    pub static_credentials: Option<(String, String)>,
}

/// The SDK client for `options`, and whether a custom endpoint and a region are set.
async fn client(options: &S3Options) -> (Client, Option<String>, bool) {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(10)))
        .read_timeout(Duration::from_mins(1))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &options.region {
        loader = loader.region(aws_sdk_s3::config::Region::new(region.clone()));
    }
    if let Some((key, secret)) = &options.static_credentials {
        loader = loader
            .credentials_provider(aws_sdk_s3::config::Credentials::new(key, secret, None, None, "envbuild"));
    }
    let sdk = loader.load().await;
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let path_style = match std::env::var("ENVBUILD_S3_PATH_STYLE").as_deref() {
        Ok("1" | "true" | "yes") => true,
        Ok("0" | "false" | "no") => false,
        _ => options.path_style.unwrap_or(custom_endpoint),
    };
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    (Client::from_conf(config), sdk.endpoint_url().map(str::to_owned), sdk.region().is_some())
}

/// Creates the bucket of `url`, for tests against a fresh server.
#[cfg(feature = "testing")]
pub async fn create_bucket(url: &str, options: &S3Options) -> Result<(), StoreError> {
    let (bucket, _) = parse_url(url)?;
    let (client, _, _) = client(options).await;
    client.create_bucket().bucket(&bucket).send().await.map_err(|e| StoreError::Unusable {
        store: url.to_owned(),
        message: format!("cannot create the bucket: {}", chain_text(&e)),
        hint: None,
    })?;
    Ok(())
}

/// `s3://bucket/some/prefix` → (`bucket`, `some/prefix/`).
pub fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    let unusable = |message: &str| StoreError::Unusable {
        store: url.to_owned(),
        message: message.to_owned(),
        hint: Some("write it as s3://BUCKET or s3://BUCKET/PREFIX".to_owned()),
    };
    let rest = url.strip_prefix("s3://").ok_or_else(|| unusable("it does not start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(unusable("the bucket name is not valid (3-63 lowercase letters, digits, `-` and `.`)"));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        ObjectPath::new(prefix).map_err(|_| unusable("the prefix has characters S3 keys should not hold"))?;
    }
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok((bucket.to_owned(), prefix))
}

/// The HTTP status of a service error, if the request got that far.
fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl S3Store {
    /// Connects to `s3://BUCKET/PREFIX` and checks that the bucket can be used.
    pub async fn connect(url: &str, options: &S3Options) -> Result<Self, StoreError> {
        let (bucket, prefix) = parse_url(url)?;
        let (client, endpoint, has_region) = client(options).await;
        let endpoint = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
        let store = Self { client, bucket, prefix, location: format!("{url}{endpoint}") };
        if !has_region {
            return Err(StoreError::Unusable {
                store: store.location.clone(),
                message: "no AWS region is configured".to_owned(),
                hint: Some("set AWS_REGION (for example us-east-1), or `region` in ~/.aws/config".to_owned()),
            });
        }
        store.check_bucket().await?;
        Ok(store)
    }

    async fn check_bucket(&self) -> Result<(), StoreError> {
        let Err(err) = self.client.head_bucket().bucket(&self.bucket).send().await else { return Ok(()) };
        let unusable = |message: String, hint: &str| StoreError::Unusable {
            store: self.location.clone(),
            message,
            hint: Some(hint.to_owned()),
        };
        Err(match status(&err) {
            Some(404) => unusable(
                format!("the bucket `{}` does not exist", self.bucket),
                "create it (e.g. `aws s3 mb s3://BUCKET`), or check the name, AWS_REGION and AWS_ENDPOINT_URL",
            ),
            Some(401 | 403) => unusable(
                format!("access to the bucket `{}` is denied", self.bucket),
                "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket policy",
            ),
            Some(code) => unusable(
                format!(
                    "checking the bucket `{}` failed with HTTP {code}: {}",
                    self.bucket,
                    chain_text(&err)
                ),
                "check AWS_ENDPOINT_URL and that the server speaks S3",
            ),
            None => {
                let detail = chain_text(&err);
                if detail.contains("credentials") {
                    unusable(
                        "no AWS credentials were found".to_owned(),
                        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                    )
                } else {
                    unusable(
                        format!("the S3 server cannot be reached: {detail}"),
                        "check AWS_ENDPOINT_URL (for an S3-compatible server) and the network",
                    )
                }
            }
        })
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Maps an SDK error onto the store's error model.
    fn error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        operation: &'static str,
        path: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let code = err.as_service_error().and_then(ProvideErrorMetadata::code).unwrap_or_default().to_owned();
        let retryable = match &err {
            SdkError::ServiceError(_) => {
                matches!(status(&err), Some(408 | 409 | 429 | 500..=599))
                    || matches!(
                        code.as_str(),
                        "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                    )
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
            _ => false,
        };
        if matches!(status(&err), Some(401 | 403)) {
            return StoreError::Unusable {
                store: self.location.clone(),
                message: format!("{operation} of `{path}` was denied ({code})"),
                hint: Some("check the credentials and that they may read and write the bucket".to_owned()),
            };
        }
        StoreError::Backend {
            store: self.location.clone(),
            operation,
            path: path.to_owned(),
            message: if code.is_empty() {
                "the request failed".to_owned()
            } else {
                format!("the server answered `{code}`")
            },
            source: Some(Box::new(err)),
            retryable,
        }
    }

    fn meta(
        &self,
        key: &str,
        size: Option<i64>,
        modified: Option<&aws_sdk_s3::primitives::DateTime>,
        etag: Option<&str>,
    ) -> Option<ObjectMeta> {
        let path = ObjectPath::new(key.strip_prefix(&self.prefix)?).ok()?;
        Some(ObjectMeta {
            path,
            size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            last_modified: modified
                .and_then(|d| SystemTime::try_from(*d).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: etag.unwrap_or_default().to_owned(),
        })
    }
}

#[async_trait]
impl Store for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(path.as_str()))
            .content_length(len)
            .body(ByteStream::from(data));
        request = match &mode {
            PutMode::Create => request.if_none_match("*"),
            PutMode::Update { etag } => request.if_match(etag),
            PutMode::Overwrite => request,
        };
        match request.send().await {
            Ok(out) => Ok(PutOutcome::Written { etag: out.e_tag().unwrap_or_default().to_owned() }),
            Err(err) => match (status(&err), &mode) {
                (Some(412), PutMode::Create) => Ok(PutOutcome::AlreadyExists),
                (Some(412 | 404), PutMode::Update { .. }) => {
                    Err(StoreError::Conflict { store: self.location.clone(), path: path.to_string() })
                }
                _ => Err(self.error("write", path.as_str(), err)),
            },
        }
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let out =
            match self.client.get_object().bucket(&self.bucket).key(self.key(path.as_str())).send().await {
                Ok(out) => out,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key)
                        || status(&err) == Some(404) =>
                {
                    return Err(StoreError::NotFound {
                        store: self.location.clone(),
                        path: path.to_string(),
                    });
                }
                Err(err) => return Err(self.error("read", path.as_str(), err)),
            };
        let too_large = |size: u64| StoreError::TooLarge {
            store: self.location.clone(),
            path: path.to_string(),
            size,
            limit,
        };
        let declared = out.content_length().and_then(|l| u64::try_from(l).ok());
        if let Some(size) = declared.filter(|&s| s > limit) {
            return Err(too_large(size));
        }
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        let mut body = out.body;
        loop {
            match body.try_next().await {
                Ok(Some(piece)) => {
                    if (bytes.len() + piece.len()) as u64 > limit {
                        return Err(too_large((bytes.len() + piece.len()) as u64));
                    }
                    bytes.extend_from_slice(&piece);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::Backend {
                        store: self.location.clone(),
                        operation: "read",
                        path: path.to_string(),
                        message: "the body was cut off".to_owned(),
                        source: Some(Box::new(e)),
                        retryable: true,
                    });
                }
            }
        }
        if declared.is_some_and(|d| d != bytes.len() as u64) {
            return Err(StoreError::Backend {
                store: self.location.clone(),
                operation: "read",
                path: path.to_string(),
                message: format!(
                    "the body has {} bytes, the header said {}",
                    bytes.len(),
                    declared.unwrap_or(0)
                ),
                source: None,
                retryable: true,
            });
        }
        Ok(GetResult { bytes: Bytes::from(bytes), etag })
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        let key = self.key(path.as_str());
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => Ok(self.meta(&key, out.content_length(), out.last_modified(), out.e_tag())),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(self.error("stat", path.as_str(), err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.error("list", prefix, err))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if let Some(meta) = self.meta(key, object.size(), object.last_modified(), object.e_tag()) {
                    out.push(meta);
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        match self.client.delete_object().bucket(&self.bucket).key(self.key(path.as_str())).send().await {
            Ok(_) => Ok(()),
            Err(err) if status(&err) == Some(404) => Ok(()),
            Err(err) => Err(self.error("delete", path.as_str(), err)),
        }
    }

    async fn sweep_abandoned(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let listing = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .map_err(|err| self.error("list uploads under", &self.prefix, err))?;
        let mut aborted = 0;
        for upload in listing.uploads() {
            let started = upload
                .initiated()
                .and_then(|d| SystemTime::try_from(*d).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
            if started < cutoff {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|err| self.error("abort the upload of", key, err))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("s3://bucket").unwrap(), ("bucket".into(), String::new()));
        assert_eq!(parse_url("s3://my-bucket/a/b/").unwrap(), ("my-bucket".into(), "a/b/".into()));
        assert!(parse_url("s3://B").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("s3://bucket/../x").is_err());
    }
}
