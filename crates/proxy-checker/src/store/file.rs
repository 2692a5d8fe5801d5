//! The JSON file store. Writes are atomic: a temp file in the same directory, fsync,
//! rename over the target, fsync the directory — a crash at any moment leaves the old
//! file or the new one, whole. The history goes to a sibling file, `NAME.history.json`
//! beside `NAME.json`, written the same way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BoxFuture, Store, StoreError};
use crate::history::{PersistedRef, Row};
use crate::snapshot::SnapshotData;

pub struct FileStore {
    path: PathBuf,
}

const TEMP_PREFIX: &str = ".proxy-checker-snapshot-";

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn err(&self, e: impl Into<crate::BoxError>) -> StoreError {
        StoreError::io("file", &self.path.display().to_string(), e)
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `data/proxies.json` → `data/proxies.history.json`.
    fn history_path(&self) -> PathBuf {
        let stem = self.path.file_stem().map_or_else(|| "proxies".into(), |s| s.to_string_lossy().into_owned());
        self.path.with_file_name(format!("{stem}.history.json"))
    }

    fn write(&self, data: &SnapshotData) -> Result<(), StoreError> {
        self.write_json(&self.path, data)
    }

    /// Writes `value` as JSON to `path` atomically.
    fn write_json(&self, path: &Path, value: &impl serde::Serialize) -> Result<(), StoreError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| self.err(e))?;
        let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&dir).map_err(|e| self.err(e))?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            serde_json::to_writer(&mut w, value).map_err(|e| self.err(e))?;
            w.flush().map_err(|e| self.err(e))?;
        }
        tmp.as_file().sync_all().map_err(|e| self.err(e))?;
        tmp.persist(path).map_err(|e| self.err(e.error))?;
        sync_dir(&dir).map_err(|e| self.err(e))
    }

    fn read_history(&self) -> Result<Vec<Row>, StoreError> {
        let path = self.history_path();
        let location = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("file", &location, e)),
        };
        super::history_from_json(&bytes, "file", &location)
    }

    fn read(&self) -> Result<Option<SnapshotData>, StoreError> {
        // Temp files left by a crash mid-write are garbage: the target is whole either way.
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let location = self.path.display().to_string();
        let data = serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt("file", &location, e))?;
        super::vet(data, "file", &location).map(Some)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn save(&self, data: Arc<SnapshotData>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let me = FileStore { path: self.path.clone() };
            tokio::task::spawn_blocking(move || me.write(&data)).await.map_err(|e| self.err(e))?
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<SnapshotData>, StoreError>> {
        Box::pin(async move {
            let me = FileStore { path: self.path.clone() };
            tokio::task::spawn_blocking(move || me.read()).await.map_err(|e| self.err(e))?
        })
    }

    fn save_history(&self, rows: Arc<Vec<Row>>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let me = FileStore { path: self.path.clone() };
            tokio::task::spawn_blocking(move || me.write_json(&me.history_path(), &PersistedRef::new(&rows)))
                .await
                .map_err(|e| self.err(e))?
        })
    }

    fn load_history(&self) -> BoxFuture<'_, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let me = FileStore { path: self.path.clone() };
            tokio::task::spawn_blocking(move || me.read_history()).await.map_err(|e| self.err(e))?
        })
    }
}
