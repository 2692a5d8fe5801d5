//! Faults: Redis stopped and restarted under the service, a full disk under the file and
//! SQLite stores, and `kill -9` in the middle of persisting, 100 times per backend.
//!
//! Redis here is a `redis-server` of our own on a Unix socket (the shared one must not be
//! stopped). The disk is a small tmpfs mounted by the test (needs root, as CI runs).
//! Without `redis-server` or root, these tests fail in CI (`CI` set) and say loudly
//! that they did not run elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use proxy_checker::config::{StorageConfig, StorageKind};
use proxy_checker::snapshot::{ProxyEntry, RoundSummary, SnapshotData};
use proxy_checker::store;
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};
use serde_json::json;

use crate::common::*;

fn unavailable(what: &str) -> bool {
    assert!(std::env::var_os("CI").is_none(), "{what}, and CI requires it");
    eprintln!("\n!!!!!!!! SKIPPED: {what}; this fault was NOT tested !!!!!!!!\n");
    true
}

/// A `redis-server` of our own on a Unix socket in the test's directory: no TCP port to
/// pick (and race for), and the same address when it is restarted.
struct RedisServer {
    child: Child,
    socket: PathBuf,
}

impl RedisServer {
    fn start(dir: &Path) -> Option<Self> {
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s = Self { child, socket };
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&s.socket).is_ok() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn farm_spec() -> FarmSpec {
    FarmSpec {
        groups: vec![
            Group::new(6, Protocol::Http, Behavior::Working),
            Group::new(3, Protocol::Socks5, Behavior::Working),
            Group::new(3, Protocol::Http, Behavior::Refused),
        ],
    }
}

/// The file or SQLite store at `path` (`kind` as in the config: `file` or `sqlite`).
fn local_store(kind: &str, path: &Path) -> StorageConfig {
    let kind = if kind == "sqlite" { StorageKind::Sqlite } else { StorageKind::File };
    StorageConfig { kind, path: path.to_path_buf(), redis_url: None, redis_prefix: String::new() }
}

fn writes(metrics: &str, result: &str) -> u64 {
    let key = format!("proxychecker_store_writes_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(key.as_str())).map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        unavailable("redis-server could not be started");
        return;
    };
    let farm = Farm::start(farm_spec()).await.unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["storage"] = json!({"type": "redis", "redis_url": redis.url(), "redis_key_prefix": "faults:"});
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    h.until("the first write", async |h| writes(&h.get("/metrics").await.1, "ok") >= 1).await;
    let served = h.authed("/get-proxy?all=1").await.1;
    assert_eq!(served.lines().count(), 9);

    // Redis goes away while a round runs, which then persists into the void.
    h.post_reload().await;
    drop(redis);
    h.wait_round(2).await;
    h.until("the failed write", async |h| writes(&h.get("/metrics").await.1, "error") >= 1).await;
    assert_eq!(h.authed("/get-proxy?all=1").await.1.lines().count(), 9, "the API goes on");

    // Redis comes back (empty: it keeps nothing on disk): the next swap writes again.
    let redis = RedisServer::start(dir.path()).expect("redis restarts on its socket");
    h.post_reload().await;
    h.wait_round(3).await;
    h.until("writes to resume", async |h| writes(&h.get("/metrics").await.1, "ok") >= 2).await;
    let st = StorageConfig {
        kind: StorageKind::Redis,
        path: PathBuf::new(),
        redis_url: Some(redis.url()),
        redis_prefix: "faults:".into(),
    };
    let loaded = store::open(&st).unwrap().load().await.unwrap().expect("a snapshot in the restarted Redis");
    assert_eq!(loaded.round.round_id, 3);
    assert_eq!(loaded.proxies.len(), 9);
}

/// A small tmpfs of our own, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn disk_full(kind: &str, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "512k") else {
        unavailable("a tmpfs could not be mounted (needs root)");
        return;
    };
    let farm = Farm::start(farm_spec()).await.unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    let path = fs.0.join(file);
    cfg["storage"] = json!({"type": kind, "path": path});
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    h.until("the first write", async |h| writes(&h.get("/metrics").await.1, "ok") >= 1).await;
    let st = local_store(kind, &path);
    let before = store::open(&st).unwrap().load().await.unwrap().expect("round 1 persisted");
    assert_eq!(before.round.round_id, 1);

    // The disk fills up; the next round cannot be written.
    let filler = fs.fill();
    h.post_reload().await;
    h.wait_round(2).await;
    h.until("the failed write", async |h| writes(&h.get("/metrics").await.1, "error") >= 1).await;
    assert_eq!(h.authed("/get-proxy?all=1").await.1.lines().count(), 9, "the API goes on");
    let after = store::open(&st).unwrap().load().await.unwrap().expect("the old snapshot is still there");
    assert_eq!(after, before, "the old snapshot is intact");

    // Space again: the next swap writes.
    std::fs::remove_file(filler).unwrap();
    h.post_reload().await;
    h.wait_round(3).await;
    h.until("writes to resume", async |h| writes(&h.get("/metrics").await.1, "ok") >= 2).await;
    let resumed = store::open(&st).unwrap().load().await.unwrap().unwrap();
    assert_eq!(resumed.round.round_id, 3);
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_file_store_keeps_the_old_snapshot() {
    disk_full("file", "snap.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_sqlite_store_keeps_the_old_snapshot() {
    disk_full("sqlite", "pool.sqlite3").await;
}

// ---- kill -9 during a persist ----

const CHILD_ENV: &str = "PC_FAULTS_PERSIST_CHILD";

/// Snapshot `n`: its size and every entry derive from `n`, so a torn or mixed snapshot
/// cannot pass [`whole`].
fn snapshot(n: u64) -> SnapshotData {
    let count = 2000 + (n % 5) as usize * 700;
    let proxies = (0..count)
        .map(|i| ProxyEntry {
            proxy: format!("http://10.{}.{}.{}:8080", n % 250, i / 250, i % 250),
            protocol: "http".into(),
            host: format!("10.{}.{}.{}", n % 250, i / 250, i % 250),
            port: 8080,
            username: None,
            password: None,
            latency_ms: u32::try_from(n).unwrap_or(u32::MAX),
            connect_ms: i as u32,
            forward: true,
            tunnel: true,
            source: format!("round-{n}"),
            anonymity: "elite".into(),
            exit_ip: Some(format!("10.{}.{}.{}", n % 250, i / 250, i % 250)),
            uptime: 1.0,
            checks: 1,
            first_seen: 1.0,
            last_ok: 1.0,
            score: 0.0,
        })
        .collect();
    SnapshotData { version: 1, round: RoundSummary { round_id: n, alive: count as u64, ..Default::default() }, proxies }
}

fn whole(s: &SnapshotData) -> bool {
    s.round.round_id > 0 && s == &snapshot(s.round.round_id)
}

/// The child's progress, beside the store: `begun` is the snapshot it started to save,
/// `done` the last one `save` returned for. Each is 8 bytes written in place (no fsync:
/// the page cache outlives a killed process), so the parent can tell a kill mid-write
/// (`begun > done`) from one between writes.
struct Progress {
    begun: std::fs::File,
    done: std::fs::File,
}

impl Progress {
    fn paths(store: &Path) -> (PathBuf, PathBuf) {
        (store.with_extension("begun"), store.with_extension("done"))
    }

    fn open(store: &Path) -> Self {
        let (b, d) = Self::paths(store);
        let open = |p: PathBuf| std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(p).unwrap();
        Self { begun: open(b), done: open(d) }
    }

    fn mark(file: &std::fs::File, n: u64) {
        std::os::unix::fs::FileExt::write_all_at(file, &n.to_le_bytes(), 0).unwrap();
    }

    /// `(begun, done)` as the child left them.
    fn read(store: &Path) -> (u64, u64) {
        let (b, d) = Self::paths(store);
        let get = |p: PathBuf| {
            std::fs::read(p)
                .ok()
                .and_then(|v| v.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())))
                .unwrap_or(0)
        };
        (get(b), get(d))
    }
}

/// Not a test of its own: the child process of `kill_9_during_persist_*`, which runs this
/// test binary with `CHILD_ENV` set. It persists snapshot after snapshot until killed,
/// marking each one begun and done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_loop_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (kind, path) = spec.split_once('=').unwrap();
    let store = store::open(&local_store(kind, Path::new(path))).unwrap();
    let progress = Progress::open(Path::new(path));
    let start = store.load().await.unwrap().map_or(0, |s| s.round.round_id);
    for n in start + 1.. {
        Progress::mark(&progress.begun, n);
        store.save(Arc::new(snapshot(n))).await.unwrap();
        Progress::mark(&progress.done, n);
        if n == start + 1 {
            // Once, so a parent that stops reading never blocks the loop on a full pipe.
            println!("saved");
        }
    }
}

async fn kill_9_during_persist(kind: &str, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let st = local_store(kind, &path);
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    let mut mid_write = 0u64;
    for i in 0..100u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "faults::persist_loop_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{kind}={}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it has saved once (so every run makes progress, however slow the
        // machine), then kill it at a varying point of a later save.
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 64];
        while !String::from_utf8_lossy(&seen).contains("saved") {
            let n = std::io::Read::read(&mut out, &mut b).unwrap();
            assert!(n > 0, "the child exited before writing");
            seen.extend_from_slice(&b[..n]);
        }
        std::thread::sleep(Duration::from_micros((i * 3700) % 9000));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();

        let (begun, done) = Progress::read(&path);
        mid_write += u64::from(begun > done);
        let loaded = store::open(&st).unwrap().load().await.unwrap_or_else(|e| panic!("kill {i}: {e}"));
        let s = loaded.unwrap_or_else(|| panic!("kill {i}: the stored snapshot vanished"));
        assert!(whole(&s), "kill {i}: a torn snapshot (round {}, {} proxies)", s.round.round_id, s.proxies.len());
        // The store holds the last snapshot saved, or the one being saved if the kill came
        // after it was committed but before `save` returned — nothing else.
        assert!(
            s.round.round_id == done || s.round.round_id == begun,
            "kill {i}: loaded round {}, but {done} was the last saved and {begun} the one being saved",
            s.round.round_id
        );
        assert!(s.round.round_id >= last, "kill {i}: went back from {last} to {}", s.round.round_id);
        last = s.round.round_id;
    }
    assert!(last >= 100, "every run saves at least once, yet only {last} snapshots were kept in 100 runs");
    // The test is only worth its name if kills land inside a write. The child spends
    // nearly all its time in `save`, so most do; none at all means it tested nothing.
    assert!(mid_write >= 10, "only {mid_write} of 100 kills landed during a write");
    eprintln!(
        "{kind}: 100 kills, {mid_write} during a write, {last} snapshots written, every restart loaded a whole one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_persist_file() {
    kill_9_during_persist("file", "snap.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_persist_sqlite() {
    kill_9_during_persist("sqlite", "pool.sqlite3").await;
}
