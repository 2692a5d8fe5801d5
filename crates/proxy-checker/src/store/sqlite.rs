//! The SQLite store: bundled SQLite in WAL mode; one transaction per snapshot, on a
//! blocking thread. A reader (another process included) sees the old snapshot or the new.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{BoxFuture, Store, StoreError};
use crate::snapshot::{ProxyEntry, RoundSummary, SnapshotData};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    location: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proxies (
    proxy TEXT NOT NULL, protocol TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,
    username TEXT, password TEXT, latency_ms INTEGER NOT NULL, connect_ms INTEGER NOT NULL,
    forward INTEGER NOT NULL, tunnel INTEGER NOT NULL, source TEXT NOT NULL
);";

/// Columns added since the first schema: `(name, declaration)`, added to older databases
/// when they are opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[("anonymity", "TEXT NOT NULL DEFAULT 'unknown'"), ("exit_ip", "TEXT")];

fn add_missing_columns(conn: &mut Connection) -> rusqlite::Result<()> {
    // In one write transaction: two processes opening an old database at once do not
    // both add a column.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let have: Vec<String> = {
        let mut stmt = tx.prepare("SELECT name FROM pragma_table_info('proxies')")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for (name, decl) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            tx.execute_batch(&format!("ALTER TABLE proxies ADD COLUMN {name} {decl}"))?;
        }
    }
    tx.commit()
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        let err = |e: rusqlite::Error| Self::err(&location, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Self::err(&location, e))?;
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_missing_columns(&mut conn).map_err(err)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), location })
    }

    fn err(location: &str, e: impl Into<crate::BoxError>) -> StoreError {
        StoreError::io("sqlite", location, e)
    }
}

fn write(conn: &mut Connection, data: &SnapshotData) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM proxies", [])?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO proxies (proxy, protocol, host, port, username, password, latency_ms, connect_ms, forward, tunnel, source, anonymity, exit_ip)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for e in &data.proxies {
            ins.execute(params![
                e.proxy,
                e.protocol,
                e.host,
                e.port,
                e.username,
                e.password,
                e.latency_ms,
                e.connect_ms,
                e.forward,
                e.tunnel,
                e.source,
                e.anonymity,
                e.exit_ip
            ])?;
        }
    }
    let round = serde_json::to_string(&data.round).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('round', ?1)", [round])?;
    tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('version', ?1)", [data.version.to_string()])?;
    tx.commit()
}

fn read(conn: &mut Connection, location: &str) -> Result<Option<SnapshotData>, StoreError> {
    let io = |e: rusqlite::Error| SqliteStore::err(location, e);
    let tx = conn.transaction().map_err(io)?;
    let meta = |k: &str| -> Result<Option<String>, StoreError> {
        tx.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).optional().map_err(io)
    };
    let Some(round) = meta("round")? else { return Ok(None) };
    let round: RoundSummary = serde_json::from_str(&round).map_err(|e| StoreError::corrupt("sqlite", location, e))?;
    // Databases written before the version was stored hold version 1.
    let version = match meta("version")? {
        None => 1,
        Some(v) => v.parse::<u32>().map_err(|e| StoreError::corrupt("sqlite", location, e))?,
    };
    let mut stmt = tx
        .prepare("SELECT proxy, protocol, host, port, username, password, latency_ms, connect_ms, forward, tunnel, source, anonymity, exit_ip FROM proxies ORDER BY latency_ms")
        .map_err(io)?;
    let proxies = stmt
        .query_map([], |r| {
            Ok(ProxyEntry {
                proxy: r.get(0)?,
                protocol: r.get(1)?,
                host: r.get(2)?,
                port: r.get(3)?,
                username: r.get(4)?,
                password: r.get(5)?,
                latency_ms: r.get(6)?,
                connect_ms: r.get(7)?,
                forward: r.get(8)?,
                tunnel: r.get(9)?,
                source: r.get(10)?,
                anonymity: r.get(11)?,
                exit_ip: r.get(12)?,
            })
        })
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::corrupt("sqlite", location, e))?;
    super::vet(SnapshotData { version, round, proxies }, "sqlite", location).map(Some)
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn save(&self, data: Arc<SnapshotData>) -> BoxFuture<'_, Result<(), StoreError>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                write(&mut c, &data)
            })
            .await
            .map_err(|e| Self::err(&self.location, e))?
            .map_err(|e| Self::err(&self.location, e))
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<SnapshotData>, StoreError>> {
        let conn = self.conn.clone();
        let location = self.location.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                read(&mut c, &location)
            })
            .await
            .map_err(|e| Self::err(&self.location, e))?
        })
    }
}
