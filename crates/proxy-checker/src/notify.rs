//! systemd integration without libsystemd: `sd_notify` datagrams (READY, STATUS, WATCHDOG,
//! STOPPING) to `$NOTIFY_SOCKET`, and the watchdog interval from `$WATCHDOG_USEC`.
//! Everything is a no-op when the service is not run by systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager's notification socket.
pub struct Notifier {
    sock: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let target = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(path).ok()?
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Self { sock, target })
    }

    /// Sends one notification (e.g. `READY=1`). Failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.target) {
            tracing::debug!(error = %e, state, "sd_notify failed");
        }
    }
}

/// The watchdog period systemd expects pings within, if it set one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
