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

use crate::BoxError;
use crate::config::{StorageConfig, StorageKind};
use crate::history::{Persisted, Row};
use crate::snapshot::{FORMAT_VERSION, SnapshotData};

/// A boxed future, so `Store` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed. The cause is kept as `source()` (shown with
/// [`crate::Chain`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{backend} at {location}")]
    Io {
        backend: &'static str,
        location: String,
        #[source]
        source: BoxError,
    },
    #[error("{backend} at {location}: stored snapshot is unreadable")]
    Corrupt {
        backend: &'static str,
        location: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "{backend} at {location}: the stored data has format version {found}, newer than the {supported} this \
         binary reads: it was written by a newer proxy-checker; run that version, or remove it to start empty"
    )]
    NewerFormat { backend: &'static str, location: String, found: u32, supported: u32 },
}

impl StoreError {
    pub(crate) fn io(backend: &'static str, location: &str, e: impl Into<BoxError>) -> Self {
        StoreError::Io { backend, location: location.to_string(), source: e.into() }
    }

    pub(crate) fn corrupt(backend: &'static str, location: &str, e: impl Into<BoxError>) -> Self {
        StoreError::Corrupt { backend, location: location.to_string(), source: e.into() }
    }
}

/// A loaded snapshot, refused if a newer binary wrote it (its fields may mean something
/// this one does not know).
pub(crate) fn vet(data: SnapshotData, backend: &'static str, location: &str) -> Result<SnapshotData, StoreError> {
    if data.version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            backend,
            location: location.to_string(),
            found: data.version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(data)
}

/// Where snapshots are kept.
pub trait Store: Send + Sync {
    /// `file`, `sqlite` or `redis`.
    fn kind(&self) -> &'static str;
    /// Replaces the stored snapshot; a reader sees the old one or the new one, whole.
    fn save(&self, data: Arc<SnapshotData>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The last stored snapshot, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<SnapshotData>, StoreError>>;
    /// Replaces the stored history (every proxy's track record), whole.
    fn save_history(&self, rows: Arc<Vec<Row>>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The stored history (empty if none was stored).
    fn load_history(&self) -> BoxFuture<'_, Result<Vec<Row>, StoreError>>;
}

/// A loaded history's rows, refused if a newer binary wrote it; rows that do not parse
/// (`junk`) are skipped with a warning, never a reason to lose the others.
pub(crate) fn history_rows(
    version: u32,
    rows: Vec<Row>,
    junk: usize,
    backend: &'static str,
    location: &str,
) -> Result<Vec<Row>, StoreError> {
    if version > crate::history::FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            backend,
            location: location.to_string(),
            found: version,
            supported: crate::history::FORMAT_VERSION,
        });
    }
    if junk > 0 {
        tracing::warn!(
            backend,
            location,
            skipped = junk,
            kept = rows.len(),
            "history rows that do not parse were skipped"
        );
    }
    Ok(rows)
}

/// [`history_rows`] of a JSON history (the file and Redis stores).
pub(crate) fn history_from_json(bytes: &[u8], backend: &'static str, location: &str) -> Result<Vec<Row>, StoreError> {
    let p: Persisted = serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(backend, location, e))?;
    let version = p.version;
    let (rows, junk) = p.into_rows();
    history_rows(version, rows, junk, backend, location)
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
