//! A fault-injecting store for tests (feature `testing`): wraps any store and, following a
//! seeded schedule, fails requests with 5xx-like errors and 409 conflicts, loses the answer
//! of writes that landed (so the retry meets 412), truncates or flips bits in what it reads,
//! fails reads of large objects part-way, adds latency, hangs, or ignores create-only
//! conditions. The same seed gives the same sequence of faults for the same sequence of
//! requests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

/// Probabilities (0 to 1) and settings of each fault.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// A request fails before reaching the inner store, as a 500/503 would.
    pub server_error: f64,
    /// A request fails with a 409 conflict.
    pub conflict: f64,
    /// A write lands but its answer is lost (the retry then meets 412).
    pub lost_write_answer: f64,
    /// A read returns its object cut short.
    pub truncate: f64,
    /// A read returns its object with one bit flipped.
    pub bit_flip: f64,
    /// A read of an object larger than this fails part-way (a dropped connection).
    pub fail_reads_over: Option<u64>,
    /// Every request waits up to this long.
    pub max_latency: Duration,
    /// A request never answers.
    pub hang: f64,
    /// Create-only writes overwrite, as a server that ignores `If-None-Match` does.
    pub ignore_conditions: bool,
}

#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: FaultPlan,
    rng: Mutex<StdRng>,
    /// Faults injected so far.
    pub injected: AtomicU64,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        let rng = Mutex::new(StdRng::seed_from_u64(plan.seed));
        Self { inner, plan, rng, injected: AtomicU64::new(0) }
    }

    fn roll(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        let hit = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random_bool(probability.min(1.0));
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn error(&self, operation: &'static str, path: &str, message: &str) -> StoreError {
        StoreError::Backend {
            store: self.inner.location(),
            operation,
            path: path.to_owned(),
            message: format!("injected fault: {message}"),
            source: None,
            retryable: true,
        }
    }

    /// Latency, hangs, 5xx and 409 common to every request.
    async fn before(&self, operation: &'static str, path: &str) -> Result<(), StoreError> {
        if !self.plan.max_latency.is_zero() {
            let wait = self
                .plan
                .max_latency
                .mul_f64(self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random());
            tokio::time::sleep(wait).await;
        }
        if self.roll(self.plan.hang) {
            std::future::pending::<()>().await;
        }
        if self.roll(self.plan.server_error) {
            return Err(self.error(operation, path, "503 Service Unavailable"));
        }
        if self.roll(self.plan.conflict) {
            return Err(self.error(operation, path, "409 Conflict"));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        self.before("write", path.as_str()).await?;
        let mode =
            if self.plan.ignore_conditions && mode == PutMode::Create { PutMode::Overwrite } else { mode };
        let outcome = self.inner.put(path, data, mode).await?;
        if self.roll(self.plan.lost_write_answer) {
            return Err(self.error("write", path.as_str(), "the connection dropped before the answer"));
        }
        Ok(outcome)
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        self.before("read", path.as_str()).await?;
        let mut got = self.inner.get(path, limit).await?;
        if self.plan.fail_reads_over.is_some_and(|n| got.bytes.len() as u64 > n) && self.roll(0.5) {
            return Err(self.error("read", path.as_str(), "the connection dropped mid-body"));
        }
        if !got.bytes.is_empty() && self.roll(self.plan.truncate) {
            let keep = got.bytes.len() / 2;
            got.bytes.truncate(keep);
        } else if !got.bytes.is_empty() && self.roll(self.plan.bit_flip) {
            let mut bytes = got.bytes.to_vec();
            let at = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .random_range(0..bytes.len());
            bytes[at] ^= 0x10;
            got.bytes = Bytes::from(bytes);
        }
        Ok(got)
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        self.before("stat", path.as_str()).await?;
        self.inner.head(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.before("list", prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        self.before("delete", path.as_str()).await?;
        self.inner.delete(path).await
    }

    async fn invalidate(&self, path: &ObjectPath) {
        self.inner.invalidate(path).await;
    }
}
