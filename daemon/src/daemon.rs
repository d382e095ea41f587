//! Wiring: state, socket, READY, the loops, and signals. Nothing here knows HTTP or SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::api::{self, AppState};
use crate::boot::{BootCommand, BootRunner};
use crate::config;
use crate::state::{State, StateError};
use crate::systemd::{self, Heartbeats, Notifier};

/// systemd's `RestartPreventExitStatus=` names this code: restarting cannot fix these errors.
pub const EXIT_CANNOT_START: u8 = 78;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Listen(#[from] api::ListenError),
    #[error("cannot install the {0} signal handler: {1}")]
    Signal(&'static str, std::io::Error),
}

const API_LOOP: &str = "api";
const PROBE_EVERY: Duration = Duration::from_secs(2);
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

pub async fn run(config_path: PathBuf) -> Result<(), DaemonError> {
    let started = Instant::now();
    let notifier = Notifier::from_env();
    let paths = config::bootstrap(&config_path);
    tracing::info!(
        config = %config_path.display(),
        state_dir = %paths.state_dir.display(),
        socket = %paths.socket.display(),
        version = env!("CARGO_PKG_VERSION"),
        "pangeod starting"
    );
    let state = match State::open(&paths.state_dir) {
        Ok(state) => Arc::new(state),
        Err(error) => {
            notifier.status(&format!("cannot start: {error}"));
            return Err(error.into());
        }
    };
    let listener = match api::bind_socket(&paths.socket, paths.socket_group.as_deref()).await {
        Ok(listener) => listener,
        Err(error) => {
            notifier.status(&format!("cannot start: {error}"));
            return Err(error.into());
        }
    };
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Signal("SIGHUP", e))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Signal("SIGTERM", e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Signal("SIGINT", e))?;

    let heartbeats = Heartbeats::default();
    let (runner, boot) = BootRunner::new(
        config_path,
        state.clone(),
        notifier.clone(),
        heartbeats.clone(),
    )?;
    record(
        &state,
        "daemon.started",
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
    );

    // The daemon is up: state loaded, socket bound. The platform's progress goes to STATUS=.
    notifier.ready("loading config");

    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    let app = AppState {
        boot: boot.clone(),
        state: state.clone(),
        started,
    };
    let server = tokio::spawn(serve(listener, api::router(app), api_stopped));
    let runner = tokio::spawn(runner.run());
    heartbeats.beat(API_LOOP);
    let probe = tokio::spawn(probe_api(paths.socket.clone(), heartbeats.clone()));
    let watchdog = systemd::watchdog_interval().map(|interval| {
        tracing::info!(?interval, "systemd watchdog armed");
        tokio::spawn(systemd::run_watchdog(
            notifier.clone(),
            heartbeats.clone(),
            interval,
            interval,
        ))
    });

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: re-reading the config");
                let command = BootCommand::Reload { actor: "SIGHUP".into(), reply: None };
                if boot.commands.send(command).await.is_err() {
                    tracing::error!("the boot runner has stopped; cannot reload");
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("stopping");
    notifier.stopping();
    probe.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // Steps are idempotent and persisted, so a step cut short resumes on the next start.
    runner.abort();
    let _ = stop_api.send(true);
    if tokio::time::timeout(SHUTDOWN_BOUND, server).await.is_err() {
        tracing::warn!("API connections did not close in time; stopping anyway");
    }
    record(
        &state,
        "daemon.stopped",
        serde_json::json!({ "uptime_seconds": started.elapsed().as_secs() }),
    );
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}

async fn serve(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "admin API server failed");
    }
}

/// The API loop is alive when it answers its own health route over the socket.
async fn probe_api(socket: PathBuf, heartbeats: Heartbeats) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    loop {
        ticker.tick().await;
        if probe_once(&socket).await {
            heartbeats.beat(API_LOOP);
        }
    }
}

async fn probe_once(socket: &Path) -> bool {
    match crate::client::request(
        socket,
        hyper::Method::GET,
        "/v1/health",
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    {
        Ok(response) => response.status.is_success(),
        Err(error) => {
            tracing::warn!(%error, "admin API liveness probe failed");
            false
        }
    }
}

fn record(state: &State, action: &str, details: serde_json::Value) {
    if let Err(error) = state.record_event("pangeod", action, details) {
        tracing::error!(%error, action, "cannot record the event");
    }
}
