//! The Redis store: async, auto-reconnecting (`ConnectionManager`, created on first use so
//! a Redis that is down at start does not stop the service). A snapshot is written under a
//! new key, then one `SET` switches the pointer, then the old key is deleted: a reader
//! never sees half of a snapshot. The history is one JSON value under `PREFIXhistory`,
//! written under a temporary key and `RENAME`d over it.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BoxFuture, Store, StoreError};
use crate::history::{PersistedRef, Row};
use crate::snapshot::SnapshotData;

pub struct RedisStore {
    client: redis::Client,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    prefix: String,
    location: String,
}

impl RedisStore {
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let location = redact(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::io("redis", &location, e))?;
        Ok(Self { client, manager: tokio::sync::Mutex::new(None), prefix: prefix.to_string(), location })
    }

    fn err(&self, e: impl Into<crate::BoxError>) -> StoreError {
        StoreError::io("redis", &self.location, e)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut guard = self.manager.lock().await;
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let m = ConnectionManager::new_with_config(self.client.clone(), cfg).await.map_err(|e| self.err(e))?;
        *guard = Some(m.clone());
        Ok(m)
    }

    fn pointer(&self) -> String {
        format!("{}current", self.prefix)
    }

    fn history_key(&self) -> String {
        format!("{}history", self.prefix)
    }
}

/// `redis://user:secret@host` → `redis://redacted:redacted@host`; a URL that does not
/// parse is redacted as text (it may still hold the password).
pub fn redact(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| crate::source::redacted_str(url), |u| crate::source::redacted(&u))
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn save(&self, data: Arc<SnapshotData>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let body =
                tokio::task::spawn_blocking(move || serde_json::to_vec(&*data).map(|b| (b, data.round.round_id)))
                    .await
                    .map_err(|e| self.err(e))?
                    .map_err(|e| self.err(e))?;
            let (body, round) = body;
            let key = format!("{}snapshot:{round}:{:x}", self.prefix, fastrand::u64(..));
            let mut c = self.conn().await?;
            let _: () = c.set(&key, body).await.map_err(|e| self.err(e))?;
            let old: Option<String> = c.getset(self.pointer(), &key).await.map_err(|e| self.err(e))?;
            if let Some(old) = old.filter(|o| *o != key) {
                let _: Result<(), _> = c.del(old).await;
            }
            Ok(())
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<SnapshotData>, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let Some(key): Option<String> = c.get(self.pointer()).await.map_err(|e| self.err(e))? else {
                return Ok(None);
            };
            let body: Option<Vec<u8>> = c.get(&key).await.map_err(|e| self.err(e))?;
            let Some(body) = body else { return Ok(None) };
            let data = serde_json::from_slice(&body).map_err(|e| StoreError::corrupt("redis", &self.location, e))?;
            super::vet(data, "redis", &self.location).map(Some)
        })
    }

    fn save_history(&self, rows: Arc<Vec<Row>>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&PersistedRef::new(&rows)))
                .await
                .map_err(|e| self.err(e))?
                .map_err(|e| self.err(e))?;
            let tmp = format!("{}history:tmp:{:x}", self.prefix, fastrand::u64(..));
            let mut c = self.conn().await?;
            // Expires on its own if the connection drops before the RENAME.
            let _: () = c.set_ex(&tmp, body, 600).await.map_err(|e| self.err(e))?;
            let renamed: Result<(), _> = c.rename(&tmp, self.history_key()).await;
            if let Err(e) = renamed {
                let _: Result<(), _> = c.del(&tmp).await;
                return Err(self.err(e));
            }
            Ok(())
        })
    }

    fn load_history(&self) -> BoxFuture<'_, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let body: Option<Vec<u8>> = c.get(self.history_key()).await.map_err(|e| self.err(e))?;
            let Some(body) = body else { return Ok(Vec::new()) };
            super::history_from_json(&body, "redis", &self.location)
        })
    }
}
