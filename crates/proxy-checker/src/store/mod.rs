//! Persistence of the served snapshot: a [`Store`] trait with three real backends — a JSON
//! file written atomically, SQLite, and Redis — chosen by `storage.type`.
//!
//! A store failure never stops rounds or the API: the caller logs it, counts it in
//! `proxychecker_store_writes_total{result="error"}`, and the next swap writes again.

mod file;
mod redis_store;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use file::FileStore;
pub use redis_store::RedisStore;
pub use sqlite::SqliteStore;

use crate::config::{StorageConfig, StorageKind};
use crate::snapshot::SnapshotData;

/// A boxed future, so `Store` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{backend} at {location}: {error}")]
    Io { backend: &'static str, location: String, error: String },
    #[error("{backend} at {location}: stored snapshot is unreadable: {error}")]
    Corrupt { backend: &'static str, location: String, error: String },
}

/// Where snapshots are kept.
pub trait Store: Send + Sync {
    /// `file`, `sqlite` or `redis`.
    fn kind(&self) -> &'static str;
    /// Replaces the stored snapshot; a reader sees the old one or the new one, whole.
    fn save(&self, data: Arc<SnapshotData>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The last stored snapshot, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<SnapshotData>, StoreError>>;
}

/// Opens the configured backend. Opening never contacts a server: Redis connects on first
/// use, so a Redis that is down at start does not stop the service.
pub fn open(cfg: &StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match cfg.kind {
        StorageKind::File => Arc::new(FileStore::new(cfg.path.clone())),
        StorageKind::Sqlite => Arc::new(SqliteStore::open(&cfg.path)?),
        StorageKind::Redis => {
            let url = cfg.redis_url.clone().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            Arc::new(RedisStore::new(&url, &cfg.redis_prefix)?)
        }
    })
}
