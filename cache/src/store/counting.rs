//! A store that counts the reads and writes reaching it (feature `testing`), to show what a
//! cache or a copy saved.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

#[derive(Debug, Default)]
pub struct Counts {
    /// Reads per object.
    pub gets: HashMap<String, u64>,
    pub get_bytes: u64,
    pub puts: u64,
    pub put_bytes: u64,
}

#[derive(Debug)]
pub struct Counting<S> {
    inner: S,
    counts: Mutex<Counts>,
}

impl<S: Store> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, counts: Mutex::new(Counts::default()) }
    }

    /// Runs `f` on the counts so far.
    pub fn with<T>(&self, f: impl FnOnce(&Counts) -> T) -> T {
        f(&self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

#[async_trait]
impl<S: Store> Store for Counting<S> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let len = data.len() as u64;
        let outcome = self.inner.put(path, data, mode).await?;
        self.update(|c| {
            c.puts += 1;
            c.put_bytes += len;
        });
        Ok(outcome)
    }
    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let got = self.inner.get(path, limit).await?;
        self.update(|c| {
            *c.gets.entry(path.to_string()).or_default() += 1;
            c.get_bytes += got.bytes.len() as u64;
        });
        Ok(got)
    }
    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        self.inner.delete(path).await
    }
    async fn invalidate(&self, path: &ObjectPath) {
        self.inner.invalidate(path).await;
    }
}
