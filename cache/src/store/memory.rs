//! An in-memory store: the reference implementation of the [`Store`] semantics, used by tests
//! and as the inner store of fault-injection wrappers. Nothing survives the process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetResult, ObjectMeta, PutMode, PutOutcome, Store, StoreError};
use crate::layout::ObjectPath;

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<ObjectPath, Stored>>,
    next_etag: AtomicU64,
    /// Told apart in its location, for tests with several stores.
    name: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    bytes: Bytes,
    etag: String,
    modified: SystemTime,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory store whose location says `name`.
    pub fn named(name: &str) -> Self {
        Self { name: Some(name.to_owned()), ..Self::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectPath, Stored>> {
        // A panic while holding the lock cannot leave the map half-updated: every update is
        // a single insert or remove.
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets an object's modification time, for tests of age-dependent behaviour.
    pub fn set_modified(&self, path: &ObjectPath, modified: SystemTime) {
        if let Some(stored) = self.lock().get_mut(path) {
            stored.modified = modified;
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn location(&self) -> String {
        match &self.name {
            Some(name) => format!("memory store `{name}`"),
            None => "memory store".to_owned(),
        }
    }

    async fn put(&self, path: &ObjectPath, data: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let mut objects = self.lock();
        match (&mode, objects.get(path)) {
            (PutMode::Create, Some(_)) => return Ok(PutOutcome::AlreadyExists),
            (PutMode::Update { etag }, current) if current.map(|c| &c.etag) != Some(etag) => {
                return Err(StoreError::Conflict { store: self.location(), path: path.to_string() });
            }
            _ => {}
        }
        let etag = format!("m{}", self.next_etag.fetch_add(1, Ordering::Relaxed));
        objects.insert(path.clone(), Stored { bytes: data, etag: etag.clone(), modified: SystemTime::now() });
        Ok(PutOutcome::Written { etag })
    }

    async fn get(&self, path: &ObjectPath, limit: u64) -> Result<GetResult, StoreError> {
        let objects = self.lock();
        let stored = objects
            .get(path)
            .ok_or_else(|| StoreError::NotFound { store: self.location(), path: path.to_string() })?;
        let size = stored.bytes.len() as u64;
        if size > limit {
            return Err(StoreError::TooLarge { store: self.location(), path: path.to_string(), size, limit });
        }
        Ok(GetResult { bytes: stored.bytes.clone(), etag: stored.etag.clone() })
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.lock().get(path).map(|s| ObjectMeta {
            path: path.clone(),
            size: s.bytes.len() as u64,
            last_modified: s.modified,
            etag: s.etag.clone(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(path, _)| path.as_str().starts_with(prefix))
            .map(|(path, s)| ObjectMeta {
                path: path.clone(),
                size: s.bytes.len() as u64,
                last_modified: s.modified,
                etag: s.etag.clone(),
            })
            .collect())
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), StoreError> {
        self.lock().remove(path);
        Ok(())
    }
}
