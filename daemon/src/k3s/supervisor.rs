//! The k3s supervisor: one interface, two ways to run the process.
//!
//! - **systemd** (production): k3s runs in its own unit (`systemd/k3s.service`, `Type=notify`,
//!   `Delegate=yes`, `KillMode=process`). pangeod starts it with `systemctl start --no-block` and
//!   watches it; a pangeod restart finds the unit active and adopts it, and k3s never writes into
//!   a pipe pangeod holds. systemd restarts it; pangeod notices a crash loop.
//! - **child** (dev runs and tests, without systemd as PID 1): the process is pangeod's direct
//!   child, in its own process group, logging to a file, restarted with exponential backoff and
//!   jitter. N exits within M minutes is a crash loop: the supervisor stops restarting and the
//!   step fails with the log's last lines.
//!
//! Nothing pangeod starts inherits `NOTIFY_SOCKET`: k3s would otherwise tell systemd that
//! *pangeod* is ready.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::watch;

use crate::systemd::Notifier;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot start {program}: {source}; check that the file exists and is executable")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed: {message}")]
    Systemctl { command: String, message: String },
    #[error(
        "{what} is crash-looping: {exits} exits within {window}s, so it is no longer restarted; last exit: {last_exit}. Fix the cause shown in the log lines, then reload pangeod (systemctl reload pangeod) to try again"
    )]
    CrashLoop {
        what: String,
        exits: usize,
        window: u64,
        last_exit: String,
    },
}

/// How the child is restarted.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// This many exits within `crash_loop_window` is a crash loop.
    pub crash_loop_exits: usize,
    pub crash_loop_window: Duration,
    /// A run this long resets the backoff.
    pub stable_after: Duration,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            crash_loop_exits: 5,
            crash_loop_window: Duration::from_secs(300),
            stable_after: Duration::from_secs(120),
            stop_grace: Duration::from_secs(30),
        }
    }
}

/// What to run as a direct child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Names the process in messages, e.g. "k3s".
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// stdout and stderr go here (appended), never to a pipe pangeod holds.
    pub log_file: PathBuf,
    /// Records the child's PID, so a pangeod that was killed finds and stops its orphan.
    pub pid_file: PathBuf,
}

/// The supervised process, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProcessStatus {
    /// `child` or `systemd`.
    pub backend: &'static str,
    /// `starting`, `running`, `backing-off`, `crash-loop`, `stopped`, or systemd's ActiveState.
    pub state: String,
    pub pid: Option<u32>,
    /// Restarts since the supervisor started (child) or systemd's NRestarts (unit).
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Backend>,
}

enum Backend {
    Child(Child),
    Systemd(Unit),
}

impl Supervisor {
    /// Starts `spec` as a direct child, restarting it by `policy`.
    pub fn child(spec: ChildSpec, policy: RestartPolicy) -> Self {
        Self {
            inner: Arc::new(Backend::Child(Child::start(spec, policy))),
        }
    }

    /// Starts (or adopts, when it is active) the systemd unit.
    pub fn systemd(unit: &str, policy: RestartPolicy) -> Result<Self, SupervisorError> {
        Ok(Self {
            inner: Arc::new(Backend::Systemd(Unit::start(unit, policy)?)),
        })
    }

    pub fn status(&self) -> ProcessStatus {
        match &*self.inner {
            Backend::Child(child) => child.status.borrow().clone(),
            Backend::Systemd(unit) => unit.status(),
        }
    }

    /// `Err` once the process is crash-looping: waiting longer will not help.
    pub fn check(&self) -> Result<(), SupervisorError> {
        match &*self.inner {
            Backend::Child(child) => {
                let status = child.status.borrow();
                if status.state == "crash-loop" {
                    return Err(SupervisorError::CrashLoop {
                        what: child.spec.name.clone(),
                        exits: child.policy.crash_loop_exits,
                        window: child.policy.crash_loop_window.as_secs(),
                        last_exit: status.last_exit.clone().unwrap_or_default(),
                    });
                }
                Ok(())
            }
            Backend::Systemd(unit) => unit.check(),
        }
    }

    /// The last `n` lines of the process's log: the log file, or the unit's journal.
    pub fn last_log_lines(&self, n: usize) -> Vec<String> {
        match &*self.inner {
            Backend::Child(child) => tail(&child.spec.log_file, n),
            Backend::Systemd(unit) => unit.journal(n),
        }
    }

    /// Restarts the process, e.g. after its config file changed.
    pub async fn restart(&self) -> Result<(), SupervisorError> {
        match &*self.inner {
            Backend::Child(child) => {
                child.restart.send_modify(|n| *n += 1);
                Ok(())
            }
            Backend::Systemd(unit) => unit.systemctl(&["restart", "--no-block"]).map(|_| ()),
        }
    }

    /// Stops a direct child: SIGTERM, then SIGKILL after the policy's grace. Returns how long
    /// it took. A systemd unit is left running: a pangeod restart must not touch k3s.
    pub async fn stop(&self) -> Duration {
        let started = Instant::now();
        if let Backend::Child(child) = &*self.inner {
            let _ = child.stop.send(true);
            let mut status = child.status.clone();
            let _ = status.wait_for(|s| s.state == "stopped").await;
        }
        started.elapsed()
    }

    /// Waits until the status changes (child) or for a short poll interval (systemd).
    pub async fn changed(&self) {
        match &*self.inner {
            Backend::Child(child) => {
                let mut status = child.status.clone();
                let _ = status.changed().await;
            }
            Backend::Systemd(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

// ------------------------------------------------------------------------------ child

struct Child {
    spec: ChildSpec,
    policy: RestartPolicy,
    status: watch::Receiver<ProcessStatus>,
    stop: watch::Sender<bool>,
    restart: watch::Sender<u64>,
}

impl Child {
    fn start(spec: ChildSpec, policy: RestartPolicy) -> Self {
        let (status_tx, status_rx) = watch::channel(ProcessStatus {
            backend: "child",
            state: "starting".into(),
            pid: None,
            restarts: 0,
            last_exit: None,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (restart_tx, restart_rx) = watch::channel(0);
        stop_orphan(&spec);
        tokio::spawn(monitor(
            spec.clone(),
            policy.clone(),
            status_tx,
            stop_rx,
            restart_rx,
        ));
        Self {
            spec,
            policy,
            status: status_rx,
            stop: stop_tx,
            restart: restart_tx,
        }
    }
}

/// A pangeod that was killed leaves its child running; the next one stops it before starting
/// another (two k3s on one data dir would corrupt it). Only a process whose command line is
/// still our program is signalled, so a reused PID is left alone.
fn stop_orphan(spec: &ChildSpec) {
    let Ok(text) = std::fs::read_to_string(&spec.pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let program = spec.program.as_os_str().as_encoded_bytes();
    // A process in the middle of execve shows an empty command line for a moment: look again
    // briefly before deciding it is not ours.
    let mut cmdline = Vec::new();
    for _ in 0..20 {
        cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.is_empty() || !process_alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if cmdline.is_empty() || !cmdline.starts_with(program) {
        return;
    }
    tracing::warn!(
        pid,
        "a {} left by an earlier pangeod still runs; stopping it",
        spec.name
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for _ in 0..100 {
        if !process_alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

fn spawn(spec: &ChildSpec) -> Result<tokio::process::Child, SupervisorError> {
    let fail = |source| SupervisorError::Spawn {
        program: spec.program.clone(),
        source,
    };
    if let Some(dir) = spec.log_file.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)
        .map_err(fail)?;
    let err = log.try_clone().map_err(fail)?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    // Last, so that nothing re-adds it.
    Notifier::scrub(command.as_std_mut());
    let child = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: a terminal's Ctrl-C reaches pangeod, which stops it in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(fail)?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&spec.pid_file, format!("{pid}\n"));
    }
    Ok(child)
}

async fn monitor(
    spec: ChildSpec,
    policy: RestartPolicy,
    status: watch::Sender<ProcessStatus>,
    mut stop: watch::Receiver<bool>,
    mut restart: watch::Receiver<u64>,
) {
    let mut exits: VecDeque<Instant> = VecDeque::new();
    let mut attempt: u32 = 0;
    let mut restarts: u32 = 0;
    loop {
        let started = Instant::now();
        let exit = match spawn(&spec) {
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(pid, program = %spec.program.display(), "{} started", spec.name);
                status.send_modify(|s| {
                    s.state = "running".into();
                    s.pid = pid;
                    s.restarts = restarts;
                });
                tokio::select! {
                    result = child.wait() => match result {
                        Ok(code) => describe_exit(code),
                        Err(error) => format!("cannot wait for it: {error}"),
                    },
                    () = stopped(&mut stop) => {
                        terminate(&mut child, &spec.name, policy.stop_grace).await;
                        let _ = std::fs::remove_file(&spec.pid_file);
                        status.send_modify(|s| { s.state = "stopped".into(); s.pid = None; });
                        return;
                    }
                    _ = restart.changed() => {
                        terminate(&mut child, &spec.name, policy.stop_grace).await;
                        attempt = 0;
                        exits.clear();
                        restarts += 1;
                        continue;
                    }
                }
            }
            Err(error) => error.to_string(),
        };
        let _ = std::fs::remove_file(&spec.pid_file);
        tracing::warn!(exit = %exit, "{} exited", spec.name);
        let now = Instant::now();
        if now.duration_since(started) >= policy.stable_after {
            attempt = 0;
            exits.clear();
        }
        exits.push_back(now);
        while exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.crash_loop_window)
        {
            exits.pop_front();
        }
        if exits.len() >= policy.crash_loop_exits {
            tracing::error!(
                exits = exits.len(),
                "{} is crash-looping; not restarting it",
                spec.name
            );
            status.send_modify(|s| {
                s.state = "crash-loop".into();
                s.pid = None;
                s.last_exit = Some(exit.clone());
            });
            tokio::select! {
                () = stopped(&mut stop) => {
                    status.send_modify(|s| s.state = "stopped".into());
                    return;
                }
                // A reload tries again from a clean slate.
                _ = restart.changed() => {
                    attempt = 0;
                    exits.clear();
                    restarts += 1;
                    continue;
                }
            }
        }
        let delay = backoff(&policy, attempt);
        attempt = attempt.saturating_add(1);
        restarts += 1;
        status.send_modify(|s| {
            s.state = "backing-off".into();
            s.pid = None;
            s.last_exit = Some(exit.clone());
        });
        tracing::info!(?delay, "restarting {} after backoff", spec.name);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => {
                status.send_modify(|s| s.state = "stopped".into());
                return;
            }
            _ = restart.changed() => { attempt = 0; }
        }
    }
}

/// Resolves when a stop is requested, or when every handle to the supervisor is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Exponential backoff with full jitter in its upper half: `[d/2, d]`, `d = initial * 2^attempt`
/// capped at `max`. The jitter keeps a restarting API server and its clients out of lockstep.
pub fn backoff(policy: &RestartPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    let full = policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => {
            let name =
                Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.to_string());
            format!("killed by {name}")
        }
        _ => "exited".into(),
    }
}

/// SIGTERM to the process group, then SIGKILL after `grace`.
async fn terminate(child: &mut tokio::process::Child, name: &str, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(-(pid as i32));
    let _ = kill(group, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => tracing::info!(pid, "{name} stopped after SIGTERM"),
        Err(_) => {
            tracing::warn!(pid, "{name} still runs {grace:?} after SIGTERM; SIGKILL");
            let _ = kill(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

/// The last `n` lines of a file, reading at most its last 64 KiB.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().rev().take(n).map(str::to_string).collect();
    lines.reverse();
    lines
}

// ------------------------------------------------------------------------------ systemd

struct Unit {
    name: String,
    policy: RestartPolicy,
    /// (when, NRestarts) samples, for crash-loop detection over the window.
    samples: std::sync::Mutex<VecDeque<(Instant, u32)>>,
}

impl Unit {
    fn start(name: &str, policy: RestartPolicy) -> Result<Self, SupervisorError> {
        let unit = Self {
            name: name.to_string(),
            policy,
            samples: Default::default(),
        };
        let props = unit.show()?;
        if prop(&props, "ActiveState") == "active" {
            tracing::info!(unit = name, "adopting the active unit");
        } else {
            unit.systemctl(&["start", "--no-block"])?;
            tracing::info!(unit = name, "started the unit");
        }
        Ok(unit)
    }

    fn systemctl(&self, args: &[&str]) -> Result<String, SupervisorError> {
        let mut command = std::process::Command::new("systemctl");
        Notifier::scrub(command.args(args).arg(&self.name));
        let text = format!("systemctl {} {}", args.join(" "), self.name);
        let output =
            command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| SupervisorError::Systemctl {
                    command: text.clone(),
                    message: e.to_string(),
                })?;
        if !output.status.success() {
            return Err(SupervisorError::Systemctl {
                command: text,
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn show(&self) -> Result<String, SupervisorError> {
        self.systemctl(&[
            "show",
            "-p",
            "ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus,LoadState",
        ])
    }

    fn status(&self) -> ProcessStatus {
        let props = self.show().unwrap_or_default();
        let pid = prop(&props, "MainPID").parse().ok().filter(|p| *p != 0);
        let restarts = prop(&props, "NRestarts").parse().unwrap_or(0);
        let result = prop(&props, "Result");
        ProcessStatus {
            backend: "systemd",
            state: format!(
                "{} ({})",
                prop(&props, "ActiveState"),
                prop(&props, "SubState")
            ),
            pid,
            restarts,
            last_exit: (!result.is_empty() && result != "success")
                .then(|| format!("result {result}, status {}", prop(&props, "ExecMainStatus"))),
        }
    }

    /// A crash loop is `crash_loop_exits` restarts by systemd within the window, or a unit that
    /// systemd gave up on (`failed`).
    fn check(&self) -> Result<(), SupervisorError> {
        let props = self.show()?;
        let restarts: u32 = prop(&props, "NRestarts").parse().unwrap_or(0);
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, restarts));
        while samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.policy.crash_loop_window)
        {
            samples.pop_front();
        }
        let oldest = samples.front().map_or(restarts, |(_, r)| *r);
        let recent = restarts.saturating_sub(oldest) as usize;
        let last_exit = format!(
            "result {}, status {}",
            prop(&props, "Result"),
            prop(&props, "ExecMainStatus")
        );
        if prop(&props, "LoadState") == "not-found" {
            return Err(SupervisorError::Systemctl {
                command: format!("systemctl show {}", self.name),
                message: "the unit is not installed".into(),
            });
        }
        if prop(&props, "ActiveState") == "failed" || recent >= self.policy.crash_loop_exits {
            return Err(SupervisorError::CrashLoop {
                what: self.name.clone(),
                exits: recent.max(1),
                window: self.policy.crash_loop_window.as_secs(),
                last_exit,
            });
        }
        Ok(())
    }

    fn journal(&self, n: usize) -> Vec<String> {
        let mut command = std::process::Command::new("journalctl");
        let output = Notifier::scrub(&mut command)
            .args([
                "-u",
                &self.name,
                "-n",
                &n.to_string(),
                "--no-pager",
                "-o",
                "cat",
            ])
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn prop<'a>(props: &'a str, key: &str) -> &'a str {
    props
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
}

/// systemd is PID 1 (`sd_booted()`): `/run/systemd/system` exists.
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        for (attempt, full_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1600),
            (5, 2000),
            (30, 2000),
        ] {
            for _ in 0..50 {
                let d = backoff(&policy, attempt).as_millis() as u64;
                assert!(
                    (full_ms / 2..=full_ms).contains(&d),
                    "attempt {attempt}: {d} ms not in [{}, {full_ms}]",
                    full_ms / 2
                );
            }
        }
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(&policy, 3)).collect();
        assert!(draws.len() > 10, "jitter varies the delay: {draws:?}");
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 3), ["line 4997", "line 4998", "line 4999"]);
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn systemctl_show_properties_parse() {
        let props = "ActiveState=active\nSubState=running\nMainPID=42\nNRestarts=3\n";
        assert_eq!(prop(props, "ActiveState"), "active");
        assert_eq!(prop(props, "MainPID"), "42");
        assert_eq!(prop(props, "Result"), "");
    }
}
