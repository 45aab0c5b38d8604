//! The current snapshot of every environment, held in memory so reads never touch the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::store::{Published, Store, StoreError};

#[derive(Clone, Default)]
pub struct Publisher {
    current: Arc<RwLock<HashMap<String, Published>>>,
}

impl Publisher {
    /// Loads every environment's snapshot from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let publisher = Self::default();
        for environment in store.environments().await? {
            publisher.publish(store.snapshot(&environment.name).await?);
        }
        Ok(publisher)
    }

    /// Makes `snapshot` current, unless a newer version already is.
    pub fn publish(&self, snapshot: Published) {
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match current.get(&snapshot.environment) {
            Some(existing) if existing.version >= snapshot.version => {}
            _ => _ = current.insert(snapshot.environment.clone(), snapshot),
        }
    }

    /// The current snapshot of an environment.
    pub fn current(&self, environment: &str) -> Option<Published> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(environment)
            .cloned()
    }
}
