//! The client of `envbuild serve`: a [`Store`] over HTTP(S), so every command works against a
//! server (`--store http://host:port`, the token from `ENVBUILD_TOKEN`).
//!
//! It speaks the service's object protocol (`/v1/objects/{path}`), which mirrors the trait
//! one to one:
//!
//! | trait | request | answers |
//! | --- | --- | --- |
//! | `get` | `GET /v1/objects/{path}` | 200 with `ETag`; 404 |
//! | `head` | `HEAD /v1/objects/{path}` | 200 with `Content-Length`, `ETag`, `Last-Modified`; 404 |
//! | `put` Create / Update / Overwrite | `PUT` with `If-None-Match: *` / `If-Match: "etag"` / nothing | 201 (or 200: a content-addressed object already there) with `ETag`; 412 |
//! | `delete` | `DELETE /v1/objects/{path}` | 204 |
//! | `list` | `GET /v1/objects?prefix=P` | 200, `{"objects": [{path, size, modified_ms, etag}]}` |
//!
//! The server checks what it is given (a chunk must hash to its name, a manifest arrives after
//! its chunks); this side still re-hashes everything it reads, like every reader of a store.
//! Sizes are bounded before bodies are read: `Content-Length` against the caller's limit,
//! and the body itself as it streams in. 5xx, 429 and network failures are retryable; the
//! [`super::retry`] decorator that [`super::open`] adds does the retrying.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

/// Largest listing answer read.
const MAX_LISTING_BYTES: u64 = 512 * 1024 * 1024;
/// Largest error body read for its message.
const MAX_ERROR_BYTES: u64 = 64 * 1024;

/// How to reach the server.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// The bearer token (`ENVBUILD_TOKEN`); `None` sends no credentials.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions").field("token", &self.token.as_ref().map(|_| "****")).finish()
    }
}

#[derive(Clone)]
pub struct HttpStore {
    client: reqwest::Client,
    /// `scheme://host:port[/prefix]`, without a trailing slash.
    base: String,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStore").field("base", &self.base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Listing {
    objects: Vec<ListedObject>,
}

#[derive(Deserialize)]
struct ListedObject {
    path: String,
    size: u64,
    modified_ms: u64,
    etag: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

impl HttpStore {
    /// A client of the server at `url` (`http://` or `https://`). Nothing is sent yet.
    pub fn new(url: &str, options: &HttpOptions) -> Result<Self, StoreError> {
        let unusable = |message: String, hint: Option<&str>| StoreError::Unusable {
            store: url.to_owned(),
            message,
            hint: hint.map(str::to_owned),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| unusable(format!("it is not a URL: {e}"), None))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(unusable("it is not an http:// or https:// URL with a host".into(), None));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
            return Err(unusable(
                "it has a query, a fragment or credentials".into(),
                Some("give the token in ENVBUILD_TOKEN, not in the URL"),
            ));
        }
        let auth = options
            .token
            .as_deref()
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| unusable("the token has characters a header cannot carry".into(), None))?;
                value.set_sensitive(true);
                Ok::<_, StoreError>(value)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("envbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unusable(format!("cannot set up an HTTP client: {e}"), None))?;
        Ok(Self { client, base: url.trim_end_matches('/').to_owned(), auth })
    }

    fn object_url(&self, path: &ObjectPath) -> String {
        // Object paths are URL-safe but for `%`, which must not start an escape.
        format!("{}/v1/objects/{}", self.base, path.as_str().replace('%', "%25"))
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, url);
        match &self.auth {
            Some(auth) => builder.header(header::AUTHORIZATION, auth.clone()),
            None => builder,
        }
    }

    async fn send(
        &self,
        operation: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        request.send().await.map_err(|e| self.network_error(operation, path, &e))
    }

    fn network_error(&self, operation: &'static str, path: &str, error: &reqwest::Error) -> StoreError {
        // The deepest cause says what happened ("Connection refused"); reqwest's own layers
        // only repeat the URL, which the store's name already gives.
        let mut cause: &dyn std::error::Error = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let what = if error.is_connect() {
            "cannot connect to the server"
        } else if error.is_timeout() {
            "the request timed out"
        } else {
            "the connection failed"
        };
        StoreError::Backend {
            store: self.location(),
            operation,
            path: path.to_owned(),
            message: format!("{what}: {cause}"),
            source: None,
            retryable: true,
        }
    }

    /// The error for an answer the operation did not expect, with the server's public message.
    async fn status_error(
        &self,
        operation: &'static str,
        path: &str,
        response: reqwest::Response,
    ) -> StoreError {
        let status = response.status();
        let message = read_bounded(response, MAX_ERROR_BYTES)
            .await
            .ok()
            .and_then(|body| serde_json::from_slice::<ErrorBody>(&body).ok())
            .map_or_else(|| status.to_string(), |body| format!("{} ({status})", body.error.message));
        let store = self.location();
        match status {
            StatusCode::UNAUTHORIZED => StoreError::Unusable {
                store,
                message: format!("the server wants a valid token: {message}"),
                hint: Some("set ENVBUILD_TOKEN to a token from `envbuild token new` on the server".into()),
            },
            StatusCode::FORBIDDEN => StoreError::Unusable {
                store,
                message: format!("the token may not {operation} `{path}`: {message}"),
                hint: Some("writing needs a token with the `write` role".into()),
            },
            _ => StoreError::Backend {
                store,
                operation,
                path: path.to_owned(),
                message,
                source: None,
                retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            },
        }
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_bounded(mut response: reqwest::Response, limit: u64) -> Result<Bytes, ReadError> {
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(ReadError::TooLarge(length));
    }
    let capacity = response.content_length().unwrap_or(0).min(limit).min(64 * 1024 * 1024);
    let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(piece) = response.chunk().await.map_err(ReadError::Network)? {
        if (body.len() + piece.len()) as u64 > limit {
            return Err(ReadError::TooLarge((body.len() + piece.len()) as u64));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

enum ReadError {
    TooLarge(u64),
    Network(reqwest::Error),
}

fn etag_of(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::ETAG)?.to_str().ok()?;
    Some(raw.trim_start_matches("W/").trim_matches('"').to_owned())
}

fn quoted(etag: &str) -> Result<HeaderValue, StoreError> {
    HeaderValue::from_str(&format!("\"{etag}\"")).map_err(|_| StoreError::Unusable {
        store: "an HTTP store".into(),
        message: format!("the ETag `{etag}` cannot be sent in a header"),
        hint: None,
    })
}

#[async_trait]
impl Store for HttpStore {
    fn location(&self) -> String {
        self.base.clone()
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let mut request = self.request(reqwest::Method::PUT, &self.object_url(path)).body(data);
        request = match &mode {
            PutMode::Create => request.header(header::IF_NONE_MATCH, "*"),
            PutMode::Update { etag } => request.header(header::IF_MATCH, quoted(etag)?),
            PutMode::Overwrite => request,
        };
        let response = self.send("write", path.as_str(), request).await?;
        match response.status() {
            // 200: a content-addressed object that was already there (never for a create-only
            // write, which gets 412).
            StatusCode::CREATED | StatusCode::OK => {
                Ok(PutOutcome::Written { etag: etag_of(response.headers()).unwrap_or_default() })
            }
            StatusCode::PRECONDITION_FAILED => match mode {
                PutMode::Create => Ok(PutOutcome::AlreadyExists),
                _ => Err(StoreError::Conflict { store: self.location(), path: path.to_string() }),
            },
            _ => Err(self.status_error("write", path.as_str(), response).await),
        }
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let request = self.request(reqwest::Method::GET, &self.object_url(path));
        let response = self.send("read", path.as_str(), request).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(StoreError::NotFound { store: self.location(), path: path.to_string() });
            }
            _ => return Err(self.status_error("read", path.as_str(), response).await),
        }
        let etag = etag_of(response.headers()).unwrap_or_default();
        match read_bounded(response, limit).await {
            Ok(bytes) => Ok(GetResult { bytes, etag }),
            Err(ReadError::TooLarge(size)) => {
                Err(StoreError::TooLarge { store: self.location(), path: path.to_string(), size, limit })
            }
            Err(ReadError::Network(e)) => Err(self.network_error("read", path.as_str(), &e)),
        }
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        let request = self.request(reqwest::Method::HEAD, &self.object_url(path));
        let response = self.send("check", path.as_str(), request).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error("check", path.as_str(), response).await),
        }
        let headers = response.headers();
        // `Content-Length` of a HEAD answer is the object's size; reqwest reports no body.
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(ObjectMeta {
            path: path.clone(),
            size,
            last_modified,
            etag: etag_of(headers).unwrap_or_default(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut url =
            reqwest::Url::parse(&format!("{}/v1/objects", self.base)).map_err(|e| StoreError::Unusable {
                store: self.location(),
                message: format!("cannot form the listing URL: {e}"),
                hint: None,
            })?;
        url.query_pairs_mut().append_pair("prefix", prefix);
        let response = self.send("list", prefix, self.request(reqwest::Method::GET, url.as_str())).await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_error("list", prefix, response).await);
        }
        let body = match read_bounded(response, MAX_LISTING_BYTES).await {
            Ok(body) => body,
            Err(ReadError::TooLarge(size)) => {
                return Err(StoreError::TooLarge {
                    store: self.location(),
                    path: format!("listing of {prefix}"),
                    size,
                    limit: MAX_LISTING_BYTES,
                });
            }
            Err(ReadError::Network(e)) => return Err(self.network_error("list", prefix, &e)),
        };
        let listing: Listing = serde_json::from_slice(&body).map_err(|e| StoreError::Backend {
            store: self.location(),
            operation: "list",
            path: prefix.to_owned(),
            message: "the server's listing is not valid".to_owned(),
            source: Some(Box::new(e)),
            retryable: false,
        })?;
        listing
            .objects
            .into_iter()
            .map(|o| {
                Ok(ObjectMeta {
                    path: ObjectPath::new(o.path)?,
                    size: o.size,
                    last_modified: SystemTime::UNIX_EPOCH + Duration::from_millis(o.modified_ms),
                    etag: o.etag,
                })
            })
            .collect()
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        let request = self.request(reqwest::Method::DELETE, &self.object_url(path));
        let response = self.send("delete", path.as_str(), request).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.status_error("delete", path.as_str(), response).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_refusals() {
        let store = HttpStore::new("http://127.0.0.1:8080/", &HttpOptions::default()).unwrap();
        let path = ObjectPath::new("v1/conformance/x/rt/0:obj=@+%.bin").unwrap();
        assert_eq!(
            store.object_url(&path),
            "http://127.0.0.1:8080/v1/objects/v1/conformance/x/rt/0:obj=@+%25.bin"
        );
        for bad in ["ftp://x", "http://", "http://u:p@host", "http://host/?q=1", "not a url"] {
            assert!(HttpStore::new(bad, &HttpOptions::default()).is_err(), "{bad}");
        }
        let options = HttpOptions { token: Some("ebt_secret".into()) };
        assert!(!format!("{options:?}").contains("ebt_secret"));
        let store = HttpStore::new("https://cache.example:8443/prefix", &options).unwrap();
        assert!(!format!("{store:?}").contains("ebt_secret"));
    }
}
