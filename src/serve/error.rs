//! Errors of the service: a public message for the client, the details for the log.
//!
//! The body is `{"error": {"code": "...", "message": "..."}}`. The public message may name
//! the object the request was about (a digest, an object path) but never the server's
//! store, paths, hosts or credentials: store failures are reported as "the store failed"
//! with the request id (also in the `X-Request-Id` header) that finds the details in the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envbuild_cache::admission::Refusal;
use envbuild_cache::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For the log only.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure of the server's side, whose details must stay in the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the server failed to answer; its log has the details (see X-Request-Id)".into(),
            detail: Some(detail.into()),
        }
    }

    pub fn too_large(what: &str, limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than the {limit} bytes allowed for {what}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { path, .. } => ApiError::not_found(format!("`{path}` is not in the store")),
            StoreError::Conflict { path, .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("`{path}` changed since it was read"),
            ),
            StoreError::InvalidPath(invalid) => ApiError::bad_request(invalid.to_string()),
            _ => {
                let mut error = ApiError::internal(e.to_string());
                if e.is_retryable() {
                    error.status = StatusCode::SERVICE_UNAVAILABLE;
                    error.code = "unavailable";
                    error.message = "the store is unavailable; try again (the server log has details)".into();
                }
                error
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Store(e) => e.into(),
            Refusal::MissingChunks { .. } | Refusal::MissingSnapshot { .. } => {
                ApiError::new(StatusCode::CONFLICT, "missing_dependency", refusal.to_string())
            }
            other => ApiError::new(StatusCode::BAD_REQUEST, "rejected", other.to_string()),
        }
    }
}

impl From<envbuild_cache::Error> for ApiError {
    fn from(e: envbuild_cache::Error) -> Self {
        match e {
            envbuild_cache::Error::Store(store) => store.into(),
            envbuild_cache::Error::NoSuchSnapshot { id, .. } => {
                ApiError::not_found(format!("snapshot {id} is not in the store"))
            }
            envbuild_cache::Error::UnknownSnapshot { query, .. } => {
                ApiError::not_found(format!("no snapshot matches `{query}`"))
            }
            envbuild_cache::Error::AmbiguousSnapshot { query, count, .. } => {
                ApiError::bad_request(format!("`{query}` matches {count} snapshots; give more digits"))
            }
            envbuild_cache::Error::Corrupt(corrupt) => {
                let mut error = ApiError::internal(corrupt.to_string());
                error.message =
                    format!("chunk {} is damaged in the store; the server log has details", corrupt.digest);
                error
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// Logs the error with its details, in the request's span.
    pub fn log(&self) {
        if let Some(detail) = &self.detail {
            tracing::error!(status = self.status.as_u16(), "{detail}");
        } else if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "{}", self.message);
        } else {
            tracing::debug!(status = self.status.as_u16(), "{}", self.message);
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}
