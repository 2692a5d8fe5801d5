//! The SQLite store: bundled SQLite in WAL mode; one transaction per snapshot, on a
//! blocking thread. A reader (another process included) sees the old snapshot or the new.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{BoxFuture, Store, StoreError};
use crate::history::Row;
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
);
CREATE TABLE IF NOT EXISTS history (
    host TEXT NOT NULL, port INTEGER NOT NULL, first_seen INTEGER NOT NULL, last_ok INTEGER NOT NULL,
    last_checked INTEGER NOT NULL, checks INTEGER NOT NULL, successes INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL, changes INTEGER NOT NULL, recent INTEGER NOT NULL,
    recent_len INTEGER NOT NULL, protocol INTEGER NOT NULL, caps INTEGER NOT NULL,
    uptime_ewma REAL NOT NULL, latency_ewma_ms REAL NOT NULL, latencies TEXT NOT NULL,
    PRIMARY KEY (host, port)
) WITHOUT ROWID;";

/// Columns added since the first schema: `(name, declaration)`, added to older databases
/// when they are opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("anonymity", "TEXT NOT NULL DEFAULT 'unknown'"),
    ("exit_ip", "TEXT"),
    ("uptime", "REAL NOT NULL DEFAULT 0"),
    ("checks", "INTEGER NOT NULL DEFAULT 0"),
    ("first_seen", "REAL NOT NULL DEFAULT 0"),
    ("last_ok", "REAL NOT NULL DEFAULT 0"),
];

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
            "INSERT INTO proxies (proxy, protocol, host, port, username, password, latency_ms, connect_ms, forward, tunnel, source, anonymity, exit_ip, uptime, checks, first_seen, last_ok)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
                e.exit_ip,
                e.uptime,
                e.checks,
                e.first_seen,
                e.last_ok
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
        .prepare("SELECT proxy, protocol, host, port, username, password, latency_ms, connect_ms, forward, tunnel, source, anonymity, exit_ip, uptime, checks, first_seen, last_ok FROM proxies ORDER BY latency_ms")
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
                uptime: r.get(13)?,
                checks: r.get(14)?,
                first_seen: r.get(15)?,
                last_ok: r.get(16)?,
                score: 0.0,
            })
        })
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::corrupt("sqlite", location, e))?;
    super::vet(SnapshotData { version, round, proxies }, "sqlite", location).map(Some)
}

fn write_history(conn: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM history", [])?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO history (host, port, first_seen, last_ok, last_checked, checks, successes,
             consecutive_failures, changes, recent, recent_len, protocol, caps, uptime_ewma, latency_ewma_ms, latencies)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for r in rows {
            let latencies = r.latencies.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            ins.execute(params![
                r.host,
                r.port,
                r.first_seen as i64,
                r.last_ok as i64,
                r.last_checked as i64,
                r.checks,
                r.successes,
                r.consecutive_failures,
                r.changes,
                r.recent,
                r.recent_len,
                r.protocol,
                r.caps,
                f64::from(r.uptime_ewma),
                f64::from(r.latency_ewma_ms),
                latencies
            ])?;
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (k, v) VALUES ('history_version', ?1)",
        [crate::history::FORMAT_VERSION.to_string()],
    )?;
    tx.commit()
}

fn read_history(conn: &mut Connection, location: &str) -> Result<Vec<Row>, StoreError> {
    let io = |e: rusqlite::Error| SqliteStore::err(location, e);
    let tx = conn.transaction().map_err(io)?;
    let version: Option<String> =
        tx.query_row("SELECT v FROM meta WHERE k = 'history_version'", [], |r| r.get(0)).optional().map_err(io)?;
    let version = match version {
        None => return Ok(Vec::new()),
        Some(v) => v.parse::<u32>().map_err(|e| StoreError::corrupt("sqlite", location, e))?,
    };
    let mut stmt = tx
        .prepare(
            "SELECT host, port, first_seen, last_ok, last_checked, checks, successes, consecutive_failures, changes,
             recent, recent_len, protocol, caps, uptime_ewma, latency_ewma_ms, latencies FROM history",
        )
        .map_err(io)?;
    // A row that does not read (out of range, NULL, wrong type) is skipped, not a reason
    // to lose the others.
    let mut junk = 0;
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            let ts = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            let latencies: String = r.get(15)?;
            Ok(Row {
                host: r.get(0)?,
                port: r.get(1)?,
                first_seen: ts(2)?,
                last_ok: ts(3)?,
                last_checked: ts(4)?,
                checks: r.get(5)?,
                successes: r.get(6)?,
                consecutive_failures: r.get(7)?,
                changes: r.get(8)?,
                recent: r.get(9)?,
                recent_len: r.get(10)?,
                protocol: r.get(11)?,
                caps: r.get(12)?,
                uptime_ewma: r.get::<_, f64>(13)? as f32,
                latency_ewma_ms: r.get::<_, f64>(14)? as f32,
                latencies: latencies.split(',').filter_map(|l| l.parse().ok()).collect(),
            })
        })
        .map_err(io)?
        .filter_map(|r| r.map_err(|_| junk += 1).ok())
        .collect();
    super::history_rows(version, rows, junk, "sqlite", location)
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

    fn save_history(&self, rows: Arc<Vec<Row>>) -> BoxFuture<'_, Result<(), StoreError>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                write_history(&mut c, &rows)
            })
            .await
            .map_err(|e| Self::err(&self.location, e))?
            .map_err(|e| Self::err(&self.location, e))
        })
    }

    fn load_history(&self) -> BoxFuture<'_, Result<Vec<Row>, StoreError>> {
        let conn = self.conn.clone();
        let location = self.location.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                read_history(&mut c, &location)
            })
            .await
            .map_err(|e| Self::err(&self.location, e))?
        })
    }
}
