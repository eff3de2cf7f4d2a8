//! Everything a build creates in the engine, removed on every path out of it.
//!
//! The pipeline registers each container and temporary image as it creates it; the caller
//! runs [`Cleanup::run`] whether the build succeeded, failed, or was cancelled (Ctrl-C drops
//! the build future and then cleans up), so nothing is left behind. A registration can be
//! withdrawn for what must outlive the build (the cached system image).

use std::sync::{Arc, Mutex};

use crate::engine::ContainerEngine;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Container(String),
    Image(String),
}

#[derive(Debug, Clone)]
pub struct Cleanup {
    engine: Arc<dyn ContainerEngine>,
    resources: Arc<Mutex<Vec<Resource>>>,
}

impl Cleanup {
    pub fn new(engine: Arc<dyn ContainerEngine>) -> Self {
        Self { engine, resources: Arc::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Resource>) -> T) -> T {
        f(&mut self.resources.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn container(&self, id: &str) {
        self.with(|r| r.push(Resource::Container(id.to_owned())));
    }

    pub fn image(&self, id: &str) {
        self.with(|r| r.push(Resource::Image(id.to_owned())));
    }

    /// Keeps image `id` after all.
    pub fn keep_image(&self, id: &str) {
        self.with(|r| r.retain(|x| *x != Resource::Image(id.to_owned())));
    }

    /// Keeps container `id` after all (a booted environment outlives the command).
    pub fn keep_container(&self, id: &str) {
        self.with(|r| r.retain(|x| *x != Resource::Container(id.to_owned())));
    }

    /// Removes everything registered, newest first (containers before the images they use).
    /// Failures are logged, not returned: cleanup must not hide the error that led here.
    pub async fn run(&self) {
        let resources = self.with(std::mem::take);
        for resource in resources.into_iter().rev() {
            let result = match &resource {
                Resource::Container(id) => self.engine.remove_container(id).await,
                Resource::Image(id) => self.engine.remove_image(id).await,
            };
            if let Err(e) = result {
                tracing::warn!("cannot remove {resource:?}: {e}");
            }
        }
    }
}
