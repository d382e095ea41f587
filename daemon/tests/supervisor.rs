//! The direct-child k3s supervisor, over a real kube-apiserver from the test control plane as
//! its process (integration-tests/controlplane): readiness, restart after kill -9, backoff and
//! crash-loop failure, a bounded stop. With K3S_BIN set to a real k3s, the same supervisor runs
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::controlplane::{ControlPlane, controlplane, free_port};
use pangeod::k3s::ready::{ReadyError, wait_ready};
use pangeod::k3s::supervisor::{ChildSpec, RestartPolicy, Supervisor};

const NODE: &str = "pangeo-test-node";

fn spec(dir: &Path, program: PathBuf, args: Vec<String>) -> ChildSpec {
    ChildSpec {
        name: "test-apiserver".into(),
        program,
        args: args.into_iter().map(Into::into).collect(),
        env: Vec::new(),
        log_file: dir.join("child.log"),
        pid_file: dir.join("child.pid"),
    }
}

fn fast_policy() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        crash_loop_exits: 4,
        crash_loop_window: Duration::from_secs(60),
        stable_after: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
    }
}

/// A supervisor running the test apiserver on a fresh port, and its kubeconfig.
fn apiserver_child(cp: &ControlPlane, dir: &Path) -> (Supervisor, PathBuf) {
    let port = free_port();
    let kubeconfig = dir.join("kubeconfig");
    cp.kubeconfig_for_port(port, &kubeconfig);
    let (program, args) = cp.apiserver_command(port);
    (
        Supervisor::child(spec(dir, program, args), fast_policy()),
        kubeconfig,
    )
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_state(supervisor: &Supervisor, state: &str, within: Duration) {
    tokio::time::timeout(within, async {
        while supervisor.status().state != state {
            supervisor.changed().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reached {state}: {:?}", supervisor.status()));
}

fn no_progress(_: &str, _: f64) {}

/// The supervised test apiserver is ready: kubeconfig, /readyz, node Ready.
async fn until_ready(supervisor: &Supervisor, kubeconfig: &Path) -> pangeod::k3s::ready::Ready {
    wait_ready(
        Some(supervisor),
        kubeconfig,
        NODE,
        Duration::from_secs(90),
        &no_progress,
    )
    .await
    .unwrap()
}

/// Polls `probe` every 20 ms until it gives a value; panics naming `what` after `within`.
async fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_child_supervisor_waits_for_readiness_and_restarts_after_kill_9() {
    let Some(cp) = controlplane() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        let (supervisor, kubeconfig) = apiserver_child(&cp, dir.path());
        let started = Instant::now();
        let ready = until_ready(&supervisor, &kubeconfig).await;
        eprintln!("start to ready: {:?}", started.elapsed());
        assert!(
            ready.server_version.starts_with("v1.36"),
            "{}",
            ready.server_version
        );
        assert!(ready.node.ready);
        let first = supervisor.status();
        assert_eq!((first.backend, first.state.as_str()), ("child", "running"));
        let pid = first.pid.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("child.pid"))
                .unwrap()
                .trim(),
            pid.to_string()
        );

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_state(&supervisor, "backing-off", Duration::from_secs(10)).await;
        assert_eq!(
            supervisor.status().last_exit.as_deref(),
            Some("killed by SIGKILL")
        );
        wait_state(&supervisor, "running", Duration::from_secs(10)).await;
        let again = until_ready(&supervisor, &kubeconfig).await;
        assert!(again.node.ready);
        let second = supervisor.status();
        assert_eq!(second.restarts, 1);
        assert_ne!(second.pid, Some(pid), "a new process");
        assert!(!alive(pid));
        supervisor.stop().await;
    });
}

#[test]
fn a_crash_loop_backs_off_then_fails_with_the_last_log_lines() {
    let Some(cp) = controlplane() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        let (program, mut args) = cp.apiserver_command(free_port());
        args.push("--no-such-flag".into());
        let supervisor = Supervisor::child(spec(dir.path(), program, args), fast_policy());
        let started = Instant::now();
        let error = wait_ready(
            Some(&supervisor),
            &dir.path().join("never-written"),
            NODE,
            Duration::from_secs(60),
            &no_progress,
        )
        .await
        .err()
        .unwrap();
        let took = started.elapsed();
        assert!(matches!(error, ReadyError::Supervisor { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("test-apiserver is crash-looping: 4 exits within 60s"),
            "{text}"
        );
        assert!(text.contains("exited with status 1"), "{text}");
        assert!(text.contains("reload pangeod"), "the fix is named: {text}");
        // Three backoffs between four exits: at least half of 200 + 400 + 800 ms.
        assert!(took >= Duration::from_millis(700), "{took:?}");
        let status = supervisor.status();
        assert_eq!(status.state, "crash-loop");
        assert_eq!(status.restarts, 3);
        let lines = supervisor.last_log_lines(20);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("unknown flag: --no-such-flag")),
            "{lines:?}"
        );
        // It is not restarted any more.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(supervisor.status().restarts, 3);
        supervisor.stop().await;
    });
}

#[test]
fn stop_sends_sigterm_and_returns_within_the_bound() {
    let Some(cp) = controlplane() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        let (supervisor, kubeconfig) = apiserver_child(&cp, dir.path());
        until_ready(&supervisor, &kubeconfig).await;
        let pid = supervisor.status().pid.unwrap();
        let took = supervisor.stop().await;
        eprintln!("apiserver stopped by SIGTERM in {took:?}");
        assert!(
            took < fast_policy().stop_grace,
            "SIGTERM was enough: {took:?}"
        );
        assert!(!alive(pid));
        assert_eq!(supervisor.status().state, "stopped");
        assert!(!dir.path().join("child.pid").exists());
    });
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        let policy = RestartPolicy {
            stop_grace: Duration::from_secs(2),
            ..fast_policy()
        };
        let supervisor = Supervisor::child(
            spec(
                dir.path(),
                "/bin/sh".into(),
                vec![
                    "-c".into(),
                    "trap '' TERM; echo started; while :; do sleep 1; done".into(),
                ],
            ),
            policy,
        );
        wait_state(&supervisor, "running", Duration::from_secs(5)).await;
        eventually("the shell starts", Duration::from_secs(5), || {
            std::fs::read_to_string(dir.path().join("child.log"))
                .ok()
                .filter(|log| log.contains("started"))
        })
        .await;
        let pid = supervisor.status().pid.unwrap();
        let took = supervisor.stop().await;
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(5),
            "SIGKILL after the 2 s grace: {took:?}"
        );
        assert!(!alive(pid));
    });
}

#[test]
fn the_child_does_not_inherit_notify_socket_and_an_orphan_is_stopped_first() {
    let dir = tempfile::tempdir().unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        // An orphan from a pangeod that was killed: same program, its PID in the pid file.
        let mut orphan = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 600; true"])
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("child.pid"), orphan.id().to_string()).unwrap();
        // As a real orphan would be: fully started (right after spawn, /proc may still show
        // an empty command line while execve finishes).
        let orphan_pid = orphan.id();
        eventually("the orphan starts", Duration::from_secs(5), || {
            std::fs::read(format!("/proc/{orphan_pid}/cmdline"))
                .ok()
                .filter(|cmdline| cmdline.starts_with(b"/bin/sh"))
        })
        .await;

        let mut child = spec(
            dir.path(),
            "/bin/sh".into(),
            vec!["-c".into(), "env > \"$0\"; sleep 600".into()],
        );
        child.args.insert(2, dir.path().join("env.txt").into());
        child.env = vec![
            ("NOTIFY_SOCKET".into(), "/run/systemd/notify".into()),
            ("KEEP".into(), "1".into()),
        ];
        let supervisor = Supervisor::child(child, fast_policy());
        // Bounded: a missed orphan fails here (and is killed) instead of hanging for its 600 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = orphan.try_wait().unwrap() {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = orphan.kill();
                panic!("the orphan was not stopped");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!exit.success(), "the orphan was signalled: {exit:?}");

        wait_state(&supervisor, "running", Duration::from_secs(5)).await;
        let env = eventually("the child writes its env", Duration::from_secs(5), || {
            std::fs::read_to_string(dir.path().join("env.txt"))
                .ok()
                .filter(|text| text.contains("KEEP=1"))
        })
        .await;
        assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
        supervisor.stop().await;
    });
}

/// With K3S_BIN pointing to a real k3s (a machine with internet, as root), the supervisor
/// runs it on a rendered config in a temp dir and waits for its node.
#[test]
fn a_real_k3s_comes_up_under_the_child_supervisor() {
    let Ok(k3s) = std::env::var("K3S_BIN") else {
        eprintln!(
            "SKIPPED: K3S_BIN is not set (a real k3s needs its binary and images; see docs/ARCHITECTURE.md)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("k3s.yaml");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "write-kubeconfig: {:?}\nwrite-kubeconfig-mode: \"0600\"\nnode-name: \"k3s-test\"\ndata-dir: {:?}\ndisable:\n  - \"local-storage\"\n",
            kubeconfig.display().to_string(),
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let rt = common::mt_runtime();
    rt.block_on(async {
        let mut child = spec(
            dir.path(),
            k3s.into(),
            vec![
                "server".into(),
                "--config".into(),
                config.display().to_string(),
            ],
        );
        child.name = "k3s".into();
        let supervisor = Supervisor::child(child, RestartPolicy::default());
        let started = Instant::now();
        let ready = wait_ready(
            Some(&supervisor),
            &kubeconfig,
            "k3s-test",
            Duration::from_secs(600),
            &no_progress,
        )
        .await
        .unwrap();
        eprintln!(
            "k3s {} ready in {:?}",
            ready.server_version,
            started.elapsed()
        );
        assert!(ready.node.ready);
        let took = supervisor.stop().await;
        assert!(took < RestartPolicy::default().stop_grace + Duration::from_secs(5));
    });
}
