//! The run loop: streams candidates into probes under the adaptive limit, retries,
//! requeues local failures and holds judge-shaped failures until the judge is cleared.
//!
//! Invariants:
//! - a local failure (fd/port/buffer exhaustion, a starved runtime) never becomes a
//!   verdict: the candidate is requeued and the limit is cut;
//! - a failure that an unreachable judge could explain is emitted only after a direct
//!   probe of that judge succeeded; a judge found down gets its held candidates
//!   rechecked on another judge, and with no judge left the run fails and marks no
//!   proxy dead;
//! - memory grows only with the small descriptors of candidates, never with the input:
//!   the input stream is pulled only when a slot is free;
//! - a check can never take the run down: a panic inside one becomes that proxy's dead
//!   verdict with [`Reason::InternalError`], logged and counted;
//! - one attempt costs at most the check timeout, both capabilities of an HTTP proxy
//!   included: they share one deadline;
//! - every task the run starts (checks, judge probes) is owned by it and aborted with it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::deadline::expired;
use super::judge::{Judge, JudgeError};
use super::limit::AdaptiveLimit;
use super::probe::{self, Exchange, Success};
use super::reason::Failure;
use super::{Alive, Candidate, CheckSettings, Mode, Progress, Reason, Scope, Verdict};
use crate::proxy::Protocol;

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("CA file `{path}`")]
    CaFile {
        path: String,
        #[source]
        source: crate::BoxError,
    },
    #[error("full-http mode needs at least one judge URL")]
    NoJudge,
}

/// Why a run produced no verdicts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}; no proxy was marked dead")]
    JudgeDown(#[from] JudgeError),
    #[error("run cancelled")]
    Cancelled,
    /// A check was put back [`MAX_LOCAL_REQUEUES`] times: this process cannot get the
    /// sockets, ports or CPU time to check at all. No proxy was marked dead for it.
    #[error("this machine is out of resources for checking ({0}); no proxy was marked dead")]
    Overloaded(String),
}

/// Totals of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub checked: u64,
    pub alive: u64,
    pub dead_by_reason: Vec<(Reason, u64)>,
    pub retries: u64,
    pub local_requeues: u64,
    /// Connections made to proxies.
    pub probes: u64,
    /// Lowest concurrency limit the AIMD reached.
    pub min_limit: usize,
    pub duration: Duration,
    /// Judges used (healthy at the start).
    pub judges: Vec<String>,
}

/// Builds the shared TLS configuration: webpki roots plus an optional PEM file.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, EngineError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let err = |e: crate::BoxError| EngineError::CaFile { path: path.display().to_string(), source: e };
        let pem = std::fs::read(path).map_err(|e| err(e.into()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.map_err(|e| err(e.into()))?).map_err(|e| err(e.into()))?;
            n += 1;
        }
        if n == 0 {
            return Err(err("no PEM certificates found".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A configured engine. Cheap to keep; one [`Engine::run`] per round.
pub struct Engine {
    settings: CheckSettings,
    exchange: Arc<Exchange>,
}

impl Engine {
    pub fn new(settings: CheckSettings, tls: Arc<rustls::ClientConfig>) -> Result<Self, EngineError> {
        if settings.mode == Mode::FullHttp && settings.judges.is_empty() {
            return Err(EngineError::NoJudge);
        }
        let exchange = Arc::new(Exchange {
            tls: TlsConnector::from(tls),
            expect_status: settings.expect_status,
            validation: settings.validation.clone(),
            connect_timeout: settings.connect_timeout,
            detect_protocol: settings.detect_protocol,
        });
        Ok(Self { settings, exchange })
    }

    /// Probes the judges directly; the healthy ones (at least one) are used by a run.
    pub async fn healthy_judges(&self) -> Result<Vec<Arc<Judge>>, JudgeError> {
        probe::probe_all(&self.settings.judges, &self.exchange, self.settings.timeout).await
    }

    /// Checks every candidate; verdicts go to `sink` as they become final. On error the
    /// caller must discard what the sink received if it wants all-or-nothing.
    ///
    /// `candidates` may arrive over time (sources parsed one by one); the run ends when
    /// the stream ends and every candidate has its verdict. `progress.total` is the
    /// caller's to keep. Judges are probed once the first candidate arrives: a run with
    /// nothing to check never contacts them.
    pub async fn run<S>(
        &self,
        mut candidates: S,
        progress: Arc<Progress>,
        cancel: CancellationToken,
        sink: &mut (dyn FnMut(Verdict) + Send),
    ) -> Result<RunStats, RunError>
    where
        S: Stream<Item = Candidate> + Send + Unpin,
    {
        let started = Instant::now();
        let first = tokio::select! {
            first = candidates.next() => first,
            _ = cancel.cancelled() => return Err(RunError::Cancelled),
        };
        let judges = match (self.settings.mode, &first) {
            (Mode::ConnectOnly, _) | (_, None) => Vec::new(),
            (Mode::FullHttp, Some(_)) => tokio::select! {
                r = self.healthy_judges() => r?,
                _ = cancel.cancelled() => return Err(RunError::Cancelled),
            },
        };
        let candidates = futures_util::stream::iter(first).chain(candidates);
        let mut run = Run::new(self, judges, progress, candidates);
        let result = run.drive(&cancel, sink).await;
        run.tasks.abort_all();
        run.judge_probes.abort_all();
        result?;
        let p = &run.progress;
        Ok(RunStats {
            checked: p.checked.load(Ordering::Relaxed),
            alive: p.alive.load(Ordering::Relaxed),
            dead_by_reason: p.dead_by_reason(),
            retries: p.retries.load(Ordering::Relaxed),
            local_requeues: p.local_requeues.load(Ordering::Relaxed),
            probes: p.probes.load(Ordering::Relaxed),
            min_limit: run.min_limit,
            duration: started.elapsed(),
            judges: run.judges.iter().map(|j| j.judge.shown.clone()).collect(),
        })
    }
}

/// A probe kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Test {
    Connect,
    Forward,
    Tunnel,
    Socks4,
    Socks5,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Pending,
    Ok(Success),
    Failed(Reason),
    Local,
}

/// One candidate in the engine: up to two capability probes and their states.
struct Job {
    cand: Candidate,
    attempt: u8,
    /// Times this job was put back for a local failure (paces its next try).
    local: u8,
    /// The judge of the forward test (or of every test when only one judge is used).
    judge: usize,
    /// The judge of tunnel and SOCKS tests: an `https://` one when one is configured, so
    /// that a proxy reading the nonce in a plain request cannot forge the tunnel capability.
    tunnel_judge: usize,
    /// A plain judge exists for the forward test.
    can_forward: bool,
    /// The protocol the list gave, once the proxy was found to speak another.
    relabelled_from: Option<Protocol>,
    tests: [Option<(Test, State)>; 2],
}

/// The probes a proxy of `protocol` gets.
fn tests_for(mode: Mode, protocol: Protocol, can_forward: bool, scope: Scope) -> [Option<(Test, State)>; 2] {
    let tests = match (mode, protocol, scope) {
        (Mode::ConnectOnly, _, _) => [Some(Test::Connect), None],
        (Mode::FullHttp, Protocol::Socks4, _) => [Some(Test::Socks4), None],
        (Mode::FullHttp, Protocol::Socks5, _) => [Some(Test::Socks5), None],
        (Mode::FullHttp, Protocol::Http | Protocol::Https, _) if !can_forward => [Some(Test::Tunnel), None],
        (Mode::FullHttp, Protocol::Http | Protocol::Https, Scope::Tunnel) => [Some(Test::Tunnel), None],
        (Mode::FullHttp, Protocol::Http | Protocol::Https, Scope::Forward) => [Some(Test::Forward), None],
        (Mode::FullHttp, Protocol::Http | Protocol::Https, Scope::Full) => [Some(Test::Forward), Some(Test::Tunnel)],
    };
    tests.map(|t| t.map(|t| (t, State::Pending)))
}

impl Job {
    /// `forward_judge`: a plain `http://` judge for the forward test (`None`: only
    /// `https://` judges, which cannot be fetched by forwarding, so tunnel only).
    fn new(cand: Candidate, mode: Mode, forward_judge: Option<usize>, tunnel_judge: usize) -> Self {
        let can_forward = forward_judge.is_some();
        let tests = tests_for(mode, cand.proxy.protocol, can_forward, cand.scope);
        Self {
            cand,
            attempt: 0,
            local: 0,
            judge: forward_judge.unwrap_or(tunnel_judge),
            tunnel_judge,
            can_forward,
            relabelled_from: None,
            tests,
        }
    }

    /// The proxy speaks `to`, not what its list said: its probes start over as `to`'s.
    fn relabel(&mut self, to: Protocol) {
        self.relabelled_from.get_or_insert(self.cand.proxy.protocol);
        self.cand.proxy.protocol = to;
        self.tests = tests_for(Mode::FullHttp, to, self.can_forward, Scope::Full);
    }

    /// The judge that a failed job's verdict is held against: the one of the test whose
    /// failure the verdict reports.
    fn judge_of_failure(&self) -> usize {
        let mut deepest: Option<(Reason, Test)> = None;
        for (test, state) in self.tests.iter().flatten() {
            if let State::Failed(r) = state
                && deepest.is_none_or(|(cur, _)| depth(*r) > depth(cur))
            {
                deepest = Some((*r, *test));
            }
        }
        match deepest {
            Some((_, Test::Forward)) | None => self.judge,
            Some(_) => self.tunnel_judge,
        }
    }

    fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.tests.iter().flatten().map(|(_, s)| *s)
    }

    /// Every test without a result fails with `reason`.
    fn fail_unfinished(&mut self, reason: Reason) {
        for (_, s) in self.tests.iter_mut().flatten() {
            if !matches!(s, State::Ok(_)) {
                *s = State::Failed(reason);
            }
        }
    }

    fn verdict(&self) -> Verdict {
        let mut best: Option<Success> = None;
        let (mut forward, mut tunnel) = (false, false);
        let mut reason: Option<Reason> = None;
        // The least anonymous of what the successful probes showed, and an exit address.
        let mut echo = super::Echo::default();
        for (test, state) in self.tests.iter().flatten() {
            match state {
                State::Ok(s) => {
                    echo.anonymity = echo.anonymity.worst(s.echo.anonymity);
                    echo.exit_ip = echo.exit_ip.or(s.echo.exit_ip);
                    best = Some(match best {
                        Some(b) if b.latency <= s.latency => b,
                        _ => *s,
                    });
                    match test {
                        Test::Forward => forward = true,
                        Test::Tunnel | Test::Socks4 | Test::Socks5 => tunnel = true,
                        Test::Connect => {}
                    }
                }
                State::Failed(r) if reason.is_none_or(|cur| depth(*r) > depth(cur)) => reason = Some(*r),
                _ => {}
            }
        }
        let outcome = match best {
            Some(s) => Ok(Alive {
                latency: s.latency,
                connect: s.connect,
                forward,
                tunnel,
                anonymity: echo.anonymity,
                exit_ip: s.echo.exit_ip.or(echo.exit_ip),
            }),
            None => Err(reason.unwrap_or(Reason::ProxyProtocolError)),
        };
        Verdict {
            candidate: self.cand.clone(),
            outcome,
            attempts: self.attempt + 1,
            relabelled_from: self.relabelled_from,
        }
    }
}

/// How far a failure got: the deepest one explains a dead proxy best.
fn depth(r: Reason) -> u8 {
    match r {
        Reason::ConnectRefused | Reason::ConnectTimeout | Reason::ConnectError => 0,
        Reason::ProxyTimeout | Reason::ProxyClosed => 1,
        Reason::ProxyProtocolError | Reason::ProxyRejected => 2,
        Reason::Timeout => 3,
        Reason::TlsError | Reason::ProxyAuthFailed => 4,
        Reason::BadStatus => 5,
        Reason::ContentMismatch => 6,
        Reason::InternalError => 7,
    }
}

/// Runs the pending probes of a job, in order, on one socket at a time, all within one
/// deadline: an attempt costs at most `timeout`, however many capabilities it tests.
fn run_job<'a>(
    ex: &'a Exchange,
    judges: (Option<&'a Judge>, Option<&'a Judge>),
    job: &'a mut Job,
    progress: &'a Progress,
    timeout: Duration,
) -> impl Future<Output = ()> + 'a {
    // Not an `async fn`: its arguments would be kept twice in the task (19,000 wait at
    // once), and so would any value moved into a probe; what the probes need is borrowed
    // from the job.
    async move {
        let (forward_judge, tunnel_judge) = judges;
        let deadline = tokio::time::Instant::now() + timeout;
        // Set once the attempt cannot go on: the proxy refused, or the deadline is spent.
        let mut spent: Option<Reason> = None;
        // A proxy found speaking another protocol is relabelled once and probed again as
        // that protocol, within the same deadline.
        loop {
            let mut speaks: Option<Protocol> = None;
            // The forward test's connection, kept for the tunnel test's CONNECT when the
            // proxy allows it: one connection per HTTP proxy.
            let tunnel_pending =
                job.tests.iter().flatten().any(|(t, s)| *t == Test::Tunnel && matches!(s, State::Pending));
            let mut kept: Option<probe::Kept> = None;
            let cand = &job.cand;
            let (addr, creds) = (cand.addr, cand.proxy.credentials.as_deref());
            for (test, state) in job.tests.iter_mut().flatten() {
                if !matches!(state, State::Pending) {
                    continue;
                }
                if spent.is_none() && tokio::time::Instant::now() >= deadline {
                    // Out of time before this test: the proxy's slowness, unless our timer is late.
                    match expired(deadline, Reason::Timeout) {
                        Failure::Dead(r) => spent = Some(r),
                        // `expired` never says this; a late timer is the only other answer.
                        Failure::Speaks(_) => spent = Some(Reason::Timeout),
                        Failure::Local(_) => {
                            *state = State::Local;
                            break;
                        }
                    }
                }
                if let Some(r) = spent {
                    // Not dialed again in this attempt: it failed already, or no time is left.
                    *state = State::Failed(r);
                    continue;
                }
                let judge = if *test == Test::Forward { forward_judge } else { tunnel_judge };
                let reused = match (kept.is_some(), *test, judge) {
                    (true, Test::Tunnel, Some(j)) => match ex.tunnel_reusing(&mut kept, creds, j, deadline).await {
                        probe::Reused::Done(r) => Some(r),
                        probe::Reused::Stale => None,
                    },
                    _ => None,
                };
                // Used once at most (borrowed, not moved: one copy of it in this task).
                kept = None;
                let result = match reused {
                    Some(r) => r,
                    None => {
                        progress.probes.fetch_add(1, Ordering::Relaxed);
                        match (*test, judge) {
                            (Test::Connect, _) => probe::connect_only(addr, ex, deadline).await,
                            (Test::Forward, Some(j)) => {
                                ex.forward(addr, creds, j, deadline, tunnel_pending).await.map(|(success, k)| {
                                    kept = k;
                                    success
                                })
                            }
                            (Test::Tunnel, Some(j)) => ex.tunnel(addr, creds, j, deadline).await,
                            (Test::Socks4, Some(j)) => ex.socks(addr, false, creds, j, deadline).await,
                            (Test::Socks5, Some(j)) => ex.socks(addr, true, creds, j, deadline).await,
                            // Unreachable by construction (full-http runs have judges); never a requeue loop.
                            (_, None) => Err(Failure::Dead(Reason::InternalError)),
                        }
                    }
                };
                *state = match result {
                    Ok(s) => State::Ok(s),
                    Err(Failure::Speaks(p)) if ex.detect_protocol && job.relabelled_from.is_none() => {
                        speaks = Some(p);
                        break;
                    }
                    Err(Failure::Speaks(_)) => State::Failed(Reason::ProxyProtocolError),
                    Err(Failure::Dead(r)) => {
                        if r.is_connect_failure() || r.spent_the_deadline() {
                            spent = Some(r);
                        }
                        State::Failed(r)
                    }
                    Err(Failure::Local(l)) => {
                        // Our failure, not the proxy's: the tests after it wait for the requeue.
                        tracing::debug!(error = %l.0, "local failure; check requeued");
                        *state = State::Local;
                        break;
                    }
                };
            }
            match speaks {
                Some(p) if job.relabelled_from.is_none() => job.relabel(p),
                _ => return,
            }
        }
    }
}

/// Panics logged per run at `error` level; the rest are counted only.
const PANICS_LOGGED: u64 = 20;

/// Runs `check` on `job`. A panic inside it fails what the job had not finished with
/// [`Reason::InternalError`], logged with the proxy (never its credentials) and counted:
/// the task that runs a check never unwinds, so no proxy can take the run down.
async fn guarded(job: &mut Job, progress: &Progress, check: impl AsyncFnOnce(&mut Job)) {
    let outcome = AssertUnwindSafe(check(job)).catch_unwind().await;
    if let Err(payload) = outcome {
        job.fail_unfinished(Reason::InternalError);
        let n = progress.internal_errors.fetch_add(1, Ordering::Relaxed);
        if n < PANICS_LOGGED {
            tracing::error!(
                proxy = %job.cand.proxy, panic = crate::panic_message(&*payload),
                "a check panicked: the proxy is dead with internal_error (a bug; please report it)"
            );
        }
    }
}

struct JudgeSlot {
    judge: Arc<Judge>,
    healthy: bool,
    /// Dead verdicts that an unreachable judge could explain, oldest first.
    held: Vec<Verdict>,
    probing: bool,
    last_probe: Option<Instant>,
    /// `held.len()` when the last probe was started or finished.
    held_at_probe: usize,
}

/// First delay before a job that failed locally is tried again.
const LOCAL_RETRY_FIRST: Duration = Duration::from_millis(10);
/// Times one job may be put back for a local failure (about a minute of pacing) before
/// the run fails as overloaded.
pub const MAX_LOCAL_REQUEUES: u8 = 64;

/// Held failures that trigger an immediate judge probe.
const HOLD_BURST: usize = 64;
/// Between probes while failures are held.
const PROBE_EVERY: Duration = Duration::from_secs(1);

struct Run<'e, It> {
    engine: &'e Engine,
    judges: Vec<JudgeSlot>,
    /// The run has an `https://` judge: tunnels are checked only on those.
    has_https: bool,
    next_judge: usize,
    progress: Arc<Progress>,
    input: It,
    input_done: bool,
    ready: VecDeque<Job>,
    delayed: DelayQueue<Job>,
    tasks: JoinSet<Job>,
    /// Direct judge probes: (judge index, held verdicts covered, result).
    judge_probes: JoinSet<(usize, usize, Result<Duration, JudgeError>)>,
    limit: Arc<AdaptiveLimit>,
    min_limit: usize,
}

impl<'e, It: Stream<Item = Candidate> + Unpin> Run<'e, It> {
    fn new(engine: &'e Engine, judges: Vec<Arc<Judge>>, progress: Arc<Progress>, input: It) -> Self {
        let limit = AdaptiveLimit::new(engine.settings.concurrency, engine.settings.adaptive);
        progress.limit.store(limit.current(), Ordering::Relaxed);
        Self {
            engine,
            has_https: judges.iter().any(|j| j.https),
            judges: judges
                .into_iter()
                .map(|judge| JudgeSlot {
                    judge,
                    healthy: true,
                    held: Vec::new(),
                    probing: false,
                    last_probe: None,
                    held_at_probe: 0,
                })
                .collect(),
            next_judge: 0,
            min_limit: limit.current(),
            progress,
            input,
            input_done: false,
            ready: VecDeque::new(),
            delayed: DelayQueue::new(),
            tasks: JoinSet::new(),
            judge_probes: JoinSet::new(),
            limit,
        }
    }

    /// The next healthy judge, round robin, among those whose scheme is `https`.
    fn pick_judge(&mut self, https: bool) -> Option<usize> {
        let n = self.judges.len();
        for _ in 0..n {
            let i = self.next_judge % n;
            self.next_judge = self.next_judge.wrapping_add(1);
            if self.judges[i].healthy && self.judges[i].judge.https == https {
                return Some(i);
            }
        }
        None
    }

    /// Forward tests use plain judges; tunnel and SOCKS tests use `https://` judges when
    /// one is configured (a proxy cannot read or forge what is inside the TLS session),
    /// never falling back to a plain one: a run whose judges of one role are all down
    /// fails instead ([`Self::judges_usable`]).
    fn new_job(&mut self, cand: Candidate) -> Job {
        let mode = self.engine.settings.mode;
        if mode != Mode::FullHttp {
            return Job::new(cand, mode, None, 0);
        }
        let plain = self.pick_judge(false);
        let tunnel = if self.has_https { self.pick_judge(true) } else { plain };
        Job::new(cand, mode, plain, tunnel.unwrap_or(0))
    }

    /// Whether every judge role of this run still has a healthy judge: plain judges for
    /// the forward test (if the run has any), `https://` judges for tunnels (if any).
    fn judges_usable(&self) -> bool {
        let healthy = |https: bool| self.judges.iter().any(|j| j.healthy && j.judge.https == https);
        let has_plain = self.judges.iter().any(|j| !j.judge.https);
        (!has_plain || healthy(false)) && (!self.has_https || healthy(true))
    }

    /// The next job to start: a requeued one, else a candidate the input has ready now.
    fn next_job(&mut self) -> Option<Job> {
        if let Some(j) = self.ready.pop_front() {
            return Some(j);
        }
        if self.input_done {
            return None;
        }
        // Only what is ready now: a pending input is awaited in `drive`'s select.
        match self.input.next().now_or_never()? {
            Some(c) => Some(self.new_job(c)),
            None => {
                self.input_done = true;
                None
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.input_done
    }

    fn finished(&self) -> bool {
        !self.has_work()
            && self.tasks.is_empty()
            && self.delayed.is_empty()
            && self.judges.iter().all(|j| j.held.is_empty() && !j.probing)
    }

    /// Whether the input should be awaited: a slot is free and nothing requeued waits.
    fn wants_input(&self) -> bool {
        !self.input_done && self.ready.is_empty() && self.limit.available() > 0
    }

    async fn drive(
        &mut self,
        cancel: &CancellationToken,
        sink: &mut (dyn FnMut(Verdict) + Send),
    ) -> Result<(), RunError> {
        let mut tick = tokio::time::interval(PROBE_EVERY / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Fill every free slot without waiting.
            while self.limit.available() > 0 {
                let Some(job) = self.next_job() else { break };
                let slot = self.limit.acquire().await;
                self.spawn(job, slot);
            }
            if self.finished() {
                return Ok(());
            }
            if !self.has_work() && self.tasks.is_empty() && self.delayed.is_empty() {
                // Only held verdicts remain: clear or condemn their judges now.
                self.probe_held(true);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(RunError::Cancelled),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(job) => self.finish(job, sink)?,
                        // Checks catch their own panics; this is a task that could not
                        // even report one. Its candidate is lost, the run goes on.
                        Err(e) if e.is_panic() => {
                            self.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
                            tracing::error!(panic = crate::panic_message(&*e.into_panic()), "a check task panicked outside its guard; its proxy has no verdict");
                        }
                        Err(_) => return Err(RunError::Cancelled),
                    }
                }
                Some(done) = self.judge_probes.join_next(), if !self.judge_probes.is_empty() => match done {
                    Ok((j, covered, result)) => self.probed(j, covered, result, sink)?,
                    // Probes catch their own panics: only cancellation ends one early.
                    Err(_) => return Err(RunError::Cancelled),
                },
                Some(exp) = poll_fn(|cx| self.delayed.poll_expired(cx)), if !self.delayed.is_empty() => {
                    self.ready.push_back(exp.into_inner());
                }
                slot = self.limit.acquire(), if !self.ready.is_empty() => {
                    if let Some(job) = self.next_job() {
                        self.spawn(job, slot);
                    }
                }
                next = self.input.next(), if self.wants_input() => match next {
                    Some(c) => {
                        let job = self.new_job(c);
                        self.ready.push_back(job);
                    }
                    None => self.input_done = true,
                },
                _ = tick.tick() => self.probe_held(false),
            }
        }
    }

    fn spawn(&mut self, mut job: Job, slot: super::limit::Slot) {
        let ex = self.engine.exchange.clone();
        let judge = self.judges.get(job.judge).map(|j| j.judge.clone());
        let tunnel_judge = self.judges.get(job.tunnel_judge).map(|j| j.judge.clone());
        let progress = self.progress.clone();
        let timeout = self.engine.settings.timeout;
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            guarded(&mut job, &progress, async |job: &mut Job| {
                run_job(&ex, (judge.as_deref(), tunnel_judge.as_deref()), job, &progress, timeout).await;
            })
            .await;
            drop(slot);
            progress.in_flight.fetch_sub(1, Ordering::Relaxed);
            job
        });
    }

    fn finish(&mut self, mut job: Job, sink: &mut (dyn FnMut(Verdict) + Send)) -> Result<(), RunError> {
        let settings = &self.engine.settings;
        if job.states().any(|s| matches!(s, State::Local)) {
            for (_, s) in job.tests.iter_mut().flatten() {
                if matches!(s, State::Local) {
                    *s = State::Pending;
                }
            }
            self.progress.local_requeues.fetch_add(1, Ordering::Relaxed);
            if let Some(new) = self.limit.on_local_failure() {
                tracing::info!(limit = new, "local resource shortage: concurrency lowered");
                self.min_limit = self.min_limit.min(new);
                self.progress.limit.store(new, Ordering::Relaxed);
            }
            // Paced, so a shortage that outlasts the AIMD cut (fds held by someone else)
            // does not become a busy loop: 10 ms, doubling, at most 1.28 s; and bounded, so
            // a machine that cannot check at all fails the run instead of spinning in it.
            if job.local >= MAX_LOCAL_REQUEUES {
                return Err(RunError::Overloaded(format!(
                    "a check was put back {MAX_LOCAL_REQUEUES} times for lack of local resources"
                )));
            }
            let delay = LOCAL_RETRY_FIRST * (1 << job.local.min(7));
            job.local = job.local.saturating_add(1);
            self.delayed.insert(job, delay);
            return Ok(());
        }
        self.limit.on_clean();
        self.progress.limit.store(self.limit.current(), Ordering::Relaxed);

        if u32::from(job.attempt) < settings.retries {
            let mut retry = false;
            for (_, s) in job.tests.iter_mut().flatten() {
                if let State::Failed(r) = s
                    && r.is_transient()
                {
                    *s = State::Pending;
                    retry = true;
                }
            }
            if retry {
                let base = settings.backoff.saturating_mul(1 << job.attempt.min(16));
                let delay = base + base.mul_f64(fastrand::f64() * 0.5);
                job.attempt += 1;
                self.progress.retries.fetch_add(1, Ordering::Relaxed);
                self.delayed.insert(job, delay);
                return Ok(());
            }
        }

        let verdict = job.verdict();
        match verdict.outcome {
            Err(r) if r.may_be_judge() && job.judge_of_failure() < self.judges.len() => {
                self.hold(job.judge_of_failure(), verdict)
            }
            _ => {
                self.progress.record(&verdict);
                sink(verdict);
                Ok(())
            }
        }
    }

    /// Holds a judge-shaped failure of judge `j` (an index into `self.judges`).
    fn hold(&mut self, j: usize, verdict: Verdict) -> Result<(), RunError> {
        let slot = &mut self.judges[j];
        if !slot.healthy {
            // The judge died while this check ran: check again elsewhere.
            return self.recheck(verdict.candidate);
        }
        slot.held.push(verdict);
        if slot.held.len() - slot.held_at_probe >= HOLD_BURST {
            self.start_probe(j);
        }
        Ok(())
    }

    fn recheck(&mut self, cand: Candidate) -> Result<(), RunError> {
        if !self.judges_usable() {
            return Err(self.all_judges_down());
        }
        let job = self.new_job(cand);
        self.ready.push_back(job);
        Ok(())
    }

    fn all_judges_down(&self) -> RunError {
        let urls: Vec<_> = self.judges.iter().map(|j| j.judge.shown.clone()).collect();
        RunError::JudgeDown(JudgeError::Down {
            url: urls.join(", "),
            reason: "stopped answering during the run".into(),
        })
    }

    /// Probes judges holding failures: when new ones arrived and a probe is due, or when
    /// nothing else is left to do (`force`).
    fn probe_held(&mut self, force: bool) {
        for j in 0..self.judges.len() {
            let s = &self.judges[j];
            if !s.healthy || s.probing || s.held.is_empty() {
                continue;
            }
            let fresh = s.held.len() > s.held_at_probe;
            let due = s.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
            if force || (fresh && due) {
                self.start_probe(j);
            }
        }
    }

    fn start_probe(&mut self, j: usize) {
        let slot = &mut self.judges[j];
        if slot.probing {
            return;
        }
        slot.probing = true;
        slot.last_probe = Some(Instant::now());
        slot.held_at_probe = slot.held.len();
        let covered = slot.held.len();
        let judge = slot.judge.clone();
        let ex = self.engine.exchange.clone();
        let timeout = self.engine.settings.timeout;
        self.judge_probes.spawn(async move {
            // A probe that panics is a failed probe of this judge, never a lost one.
            let probed = AssertUnwindSafe(probe::probe_direct(&judge, &ex, timeout)).catch_unwind().await;
            let result = probed.unwrap_or_else(|payload| {
                let reason = format!("the probe panicked: {}", crate::panic_message(&*payload));
                Err(JudgeError::Down { url: judge.shown.clone(), reason })
            });
            (j, covered, result)
        });
    }

    fn probed(
        &mut self,
        j: usize,
        covered: usize,
        result: Result<Duration, JudgeError>,
        sink: &mut (dyn FnMut(Verdict) + Send),
    ) -> Result<(), RunError> {
        let slot = &mut self.judges[j];
        slot.probing = false;
        match result {
            Ok(_) => {
                // The judge answers: what failed before the probe failed on its own.
                let cleared: Vec<_> = slot.held.drain(..covered.min(slot.held.len())).collect();
                slot.held_at_probe = 0;
                for v in cleared {
                    self.progress.record(&v);
                    sink(v);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(judge = %slot.judge.shown, error = %crate::Chain(&e), held = slot.held.len(), "judge down during the run; its failures are rechecked");
                slot.healthy = false;
                let held = std::mem::take(&mut slot.held);
                slot.held_at_probe = 0;
                if !self.judges_usable() {
                    return Err(RunError::JudgeDown(e));
                }
                for v in held {
                    self.recheck(v.candidate)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ParseOptions, parse::parse_token};

    fn candidate() -> Candidate {
        let opts = ParseOptions { default_protocol: Protocol::Http, allow_private: false, max_proxies: usize::MAX };
        Candidate {
            proxy: parse_token("1.2.3.4:80", opts).unwrap(),
            addr: "1.2.3.4:80".parse().unwrap(),
            source: 0,
            scope: Default::default(),
        }
    }

    /// Thousands of check tasks are alive at once: their state must stay small. Large
    /// states (TLS, SOCKS handshakes) are boxed only while they run.
    #[tokio::test]
    async fn check_task_stays_small() {
        let tls = tls_config(None).unwrap();
        let ex = Arc::new(Exchange {
            tls: TlsConnector::from(tls),
            expect_status: 200,
            validation: super::super::Validation::Nonce,
            connect_timeout: Duration::from_secs(1),
            detect_protocol: true,
        });
        let cand = candidate();
        let progress = Progress::default();
        let mut job = Job::new(cand, Mode::FullHttp, Some(0), 0);
        let task = run_job(&ex, (None, None), &mut job, &progress, Duration::from_secs(1));
        let size = std::mem::size_of_val(&task);
        // 1,040 bytes today (2,040 before issue 15's memory work; 19,000 of them wait at
        // once). What keeps it there: the probes are plain functions returning an `async
        // move` block (an `async fn` keeps its arguments twice), nothing is moved into a
        // probe that its caller also keeps (the kept connection and the tunnel's stream
        // are lent), the answer's validation is boxed for the moment it runs, the wait for
        // an answer is a polled peek, `within` is a combinator, and the socket keeps its
        // times in 32-bit microseconds.
        assert!(size <= 1088, "a check task's future is {size} bytes");
        // Two probe results with what their echo told (anonymity, exit address) each.
        let job = std::mem::size_of::<Job>();
        assert!(job <= 256, "a job is {job} bytes");
    }

    /// A check that panics half-way is that proxy's `internal_error`, counted; what it
    /// had already found stays.
    #[tokio::test]
    async fn a_panic_in_a_check_is_the_proxys_internal_error() {
        let cand = candidate();
        let progress = Progress::default();
        let mut job = Job::new(cand.clone(), Mode::FullHttp, Some(0), 0);
        guarded(&mut job, &progress, async |job: &mut Job| {
            job.tests[0].as_mut().unwrap().1 = State::Failed(Reason::ConnectRefused);
            panic!("a chunk size that overflowed");
        })
        .await;
        assert_eq!(job.verdict().outcome.unwrap_err(), Reason::InternalError);
        assert!(!Reason::InternalError.is_transient() && !Reason::InternalError.may_be_judge());
        assert_eq!(progress.internal_errors.load(Ordering::Relaxed), 1);

        // A capability found before the panic is kept: the proxy is alive with it.
        let mut job = Job::new(cand, Mode::FullHttp, Some(0), 0);
        let ok =
            Success { latency: Duration::from_millis(30), connect: Duration::from_millis(1), echo: Default::default() };
        guarded(&mut job, &progress, async |job: &mut Job| {
            job.tests[0].as_mut().unwrap().1 = State::Ok(ok);
            panic!("in the tunnel test");
        })
        .await;
        let alive = job.verdict().outcome.unwrap();
        assert!(alive.forward && !alive.tunnel);
        assert_eq!(progress.internal_errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_deepest_failure_explains_a_dead_proxy() {
        let cand = candidate();
        let mut job = Job::new(cand, Mode::FullHttp, Some(0), 0);
        job.tests[0].as_mut().unwrap().1 = State::Failed(Reason::ContentMismatch);
        job.tests[1].as_mut().unwrap().1 = State::Failed(Reason::ProxyRejected);
        assert_eq!(job.verdict().outcome.unwrap_err(), Reason::ContentMismatch);
        let ok =
            Success { latency: Duration::from_millis(30), connect: Duration::from_millis(1), echo: Default::default() };
        job.tests[1].as_mut().unwrap().1 = State::Ok(ok);
        let alive = job.verdict().outcome.unwrap();
        assert!(!alive.forward && alive.tunnel && alive.latency == ok.latency);
    }
}
