//! Retries with backoff, as a decorator any store can wear.
//!
//! Every request gets an attempt timeout (a hung connection becomes a retryable failure) and is
//! retried with jittered exponential backoff while the error says a retry may succeed (5xx,
//! throttling, 409 conflicts of concurrent conditional writes, timeouts, dropped or stalled
//! connections). Retrying writes is safe by construction: a create-only write whose first
//! attempt landed but whose answer was lost comes back as `AlreadyExists`, which is success for
//! content-addressed objects; a compare-and-swap conflict is never retried here, because only
//! the caller can decide what to write after re-reading. When the attempts run out, the error
//! says how many were made and what the last one was.
//!
//! The backends themselves do not retry (the AWS SDK's own retries are switched off), so one
//! policy, tested with the fault-injecting store, governs every backend.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long one attempt may take before it counts as failed.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            attempt_timeout: Duration::from_mins(2),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random delay up to the exponential cap, so retrying clients spread out.
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay);
        cap.mul_f64(rand::random::<f64>())
    }
}

#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Store> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        path: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match tokio::time::timeout(self.policy.attempt_timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !e.is_retryable() => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => StoreError::Backend {
                    store: self.inner.location(),
                    operation,
                    path: path.to_owned(),
                    message: format!("no answer within {:?}", self.policy.attempt_timeout),
                    source: None,
                    retryable: true,
                },
            };
            if tries >= self.policy.attempts {
                return Err(StoreError::Backend {
                    store: self.inner.location(),
                    operation,
                    path: path.to_owned(),
                    message: format!("gave up after {tries} attempts; the last failed"),
                    source: Some(Box::new(error)),
                    retryable: false,
                });
            }
            tracing::debug!("{operation} `{path}` failed (attempt {tries}), retrying: {error}");
            tokio::time::sleep(self.policy.delay(tries)).await;
        }
    }
}

#[async_trait]
impl<S: Store> Store for Retrying<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        self.run("write", path.as_str(), || self.inner.put(path, data.clone(), mode.clone())).await
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        self.run("read", path.as_str(), || self.inner.get(path, limit)).await
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        self.run("stat", path.as_str(), || self.inner.head(path)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        self.run("delete", path.as_str(), || self.inner.delete(path)).await
    }

    async fn sweep_abandoned(&self, cutoff: std::time::SystemTime) -> Result<u64, StoreError> {
        self.run("sweep", "", || self.inner.sweep_abandoned(cutoff)).await
    }

    async fn invalidate(&self, path: &ObjectPath) {
        self.inner.invalidate(path).await;
    }
}
