//! The only module that talks to systemd: readiness and status notifications, and the
//! watchdog, which is pinged only while every critical loop shows signs of life.

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends `sd_notify` messages when started by systemd with `Type=notify`; a no-op otherwise.
#[derive(Clone, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` once. Children must not inherit it: use
    /// [`Notifier::scrub`] on every `Command` pangeod starts.
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(&path),
        };
        match (addr, UnixDatagram::unbound()) {
            (Ok(addr), Ok(socket)) => Self {
                target: Some(Arc::new((socket, addr))),
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, socket = %path, "cannot use NOTIFY_SOCKET; systemd will not hear from pangeod");
                Self::default()
            }
        }
    }

    fn send(&self, message: &str) {
        if let Some(target) = &self.target {
            let (socket, addr) = &**target;
            if let Err(error) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(%error, "sd_notify failed");
            }
        }
    }

    /// The daemon is up: its state is loaded and its socket bound (not: the platform is ready).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn reloaded(&self) {
        self.send("READY=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Keeps our systemd socket from leaking into a child process.
    pub fn scrub(command: &mut std::process::Command) -> &mut std::process::Command {
        command
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
    }
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// The watchdog interval systemd asked for, if it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Critical loops beat here; the watchdog pings systemd only while all beats are fresh.
#[derive(Clone, Default)]
pub struct Heartbeats {
    beats: Arc<Mutex<BTreeMap<&'static str, Instant>>>,
}

impl Heartbeats {
    pub fn beat(&self, name: &'static str) {
        self.lock().insert(name, Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Instant>> {
        self.beats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The loops whose last beat is older than `limit`.
    pub fn stalled(&self, limit: Duration) -> Vec<&'static str> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, last)| now.duration_since(**last) > limit)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Pings systemd at half the interval while no loop has stalled for longer than `stall_limit`.
pub async fn run_watchdog(
    notifier: Notifier,
    heartbeats: Heartbeats,
    interval: Duration,
    stall_limit: Duration,
) {
    let mut ticker = tokio::time::interval(interval / 2);
    let mut reported = false;
    loop {
        ticker.tick().await;
        let stalled = heartbeats.stalled(stall_limit);
        if stalled.is_empty() {
            notifier.watchdog();
            reported = false;
        } else if !reported {
            tracing::error!(loops = ?stalled, "critical loop stalled; no longer pinging the systemd watchdog");
            notifier.status(&format!("stalled: {}", stalled.join(", ")));
            reported = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_reported_stalled() {
        let beats = Heartbeats::default();
        beats.beat("boot");
        beats.beat("api");
        assert!(beats.stalled(Duration::from_secs(5)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        beats.beat("api");
        assert_eq!(beats.stalled(Duration::from_millis(20)), ["boot"]);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Arc::new((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            ))),
        };
        notifier.ready("config: running\nsecond line dropped");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=config: running");
    }
}
