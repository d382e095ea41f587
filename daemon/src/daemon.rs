//! Wiring: state, socket, READY, the loops, and signals. Nothing here knows HTTP or SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::boot::BootRunner;
use crate::config;
use crate::directory::{self, DirectorySync};
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
/// A child k3s gets its SIGTERM grace (30 s) and a little more.
const K3S_STOP_BOUND: Duration = Duration::from_secs(40);

/// Raises the soft limit of open files to the hard one (the unit's `LimitNOFILE`), so the
/// listeners' bounded connections, the kube watches and SQLite never meet the 1,024 default.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

pub async fn run(config_path: PathBuf) -> Result<(), DaemonError> {
    let started = Instant::now();
    let notifier = Notifier::from_env();
    let paths = config::bootstrap(&config_path);
    raise_open_file_limit();
    tracing::info!(
        config = %config_path.display(),
        state_dir = %paths.daemon.state_dir.display(),
        socket = %paths.api.socket.display(),
        version = env!("CARGO_PKG_VERSION"),
        "pangeod starting"
    );
    let state = match State::open(&paths.daemon.state_dir) {
        Ok(state) => Arc::new(state),
        Err(error) => {
            notifier.status(&format!("cannot start: {error}"));
            return Err(error.into());
        }
    };
    let listener =
        match api::bind_socket(&paths.api.socket, paths.api.socket_group.as_deref()).await {
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
    let directory = DirectorySync::new(state.clone());
    let k3s = crate::k3s::K3sRuntime::default();
    let components = crate::components::Tracker::default();
    let hub = crate::hub::HubSync::new(state.clone(), k3s.clone());
    // A hub installed again (its HelmChart was deleted and put back) starts on an empty
    // database: the hub sync runs at once, and retries with its backoff until the hub is up,
    // instead of waiting for its next period (up to 5 minutes without users or admin flags).
    {
        let (components, hub) = (components.clone(), hub.clone());
        tokio::spawn(async move {
            loop {
                components.reinstalled().await;
                tracing::info!("a release was installed again; the hub sync runs now");
                hub.kick();
            }
        });
    }
    let (runner, boot) = BootRunner::new(
        config_path.clone(),
        state.clone(),
        directory.clone(),
        k3s.clone(),
        components.clone(),
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
    let tcp = match &paths.api.listen {
        Some(addr) => match tcp_listener(*addr, &paths).await {
            Ok(tcp) => Some(tcp),
            Err(error) => {
                // The socket still serves local admins; status and the log say why TCP is off.
                tracing::error!(%error, "the admin API's TCP listener is off");
                record(
                    &state,
                    "api.tcp_failed",
                    serde_json::json!({ "error": error.to_string() }),
                );
                None
            }
        },
        None => None,
    };
    let app = AppState {
        directory: directory.clone(),
        hub: hub.clone(),
        boot: boot.clone(),
        k3s: k3s.clone(),
        components: components.clone(),
        state: state.clone(),
        config_path: config_path.clone(),
        started,
        metrics: Default::default(),
        tcp: tcp.as_ref().map(|t| t.info.clone()),
        patch_lock: Default::default(),
        cluster: Default::default(),
    };
    let router = api::router(app);
    let mut servers = vec![tokio::spawn(api::serve_unix(
        listener,
        router.clone(),
        api_stopped.clone(),
    ))];
    if let Some(tcp) = tcp {
        servers.push(tokio::spawn(api::serve_tls(
            tcp.listener,
            router,
            tcp.tls,
            paths.api.admin_allowed_cidrs.clone(),
            tcp.tokens,
            api_stopped,
        )));
    }
    // Cancelled at the stop: every loop ends where it is (each run is idempotent and persisted).
    let cancel = CancellationToken::new();
    let runner = tokio::spawn(runner.run(cancel.clone()));
    let sync_loop = tokio::spawn(directory::run_loop(
        directory.clone(),
        boot.config.clone(),
        heartbeats.clone(),
        cancel.clone(),
    ));
    let hub_loop = tokio::spawn(hub.run_loop(
        boot.config.clone(),
        directory.status(),
        heartbeats.clone(),
        cancel.clone(),
    ));
    heartbeats.beat(API_LOOP);
    let probe = tokio::spawn(probe_api(paths.api.socket.clone(), heartbeats.clone()));
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
                boot.request_reload("SIGHUP");
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
    // Steps are idempotent and persisted, so a step cut short resumes on the next start. A
    // loop in the middle of a poll (on another worker) finishes that poll first, so wait for
    // each to be gone before the last event is written.
    cancel.cancel();
    for task in [runner, sync_loop, hub_loop] {
        let abort = task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_BOUND, task).await.is_err() {
            tracing::warn!("a loop did not stop in time; aborting it");
            abort.abort();
        }
    }
    // A child k3s stops with pangeod; a k3s unit keeps running.
    if tokio::time::timeout(K3S_STOP_BOUND, k3s.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("k3s did not stop in time");
    }
    let _ = stop_api.send(true);
    for server in servers {
        if tokio::time::timeout(SHUTDOWN_BOUND, server).await.is_err() {
            tracing::warn!("API connections did not close in time; stopping anyway");
        }
    }
    record(
        &state,
        "daemon.stopped",
        serde_json::json!({ "uptime_seconds": started.elapsed().as_secs() }),
    );
    let _ = std::fs::remove_file(&paths.api.socket);
    Ok(())
}

struct TcpListener {
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    tokens: api::auth::Tokens,
    info: api::TcpListenerInfo,
}

#[derive(Debug, thiserror::Error)]
enum TcpError {
    #[error(transparent)]
    Auth(#[from] api::auth::AuthError),
    #[error(transparent)]
    Listen(#[from] api::ListenError),
}

/// The portal's listener: TLS (configured or generated), tokens (configured or generated).
async fn tcp_listener(
    addr: std::net::SocketAddr,
    paths: &config::Bootstrap,
) -> Result<TcpListener, TcpError> {
    let state_dir = &paths.daemon.state_dir;
    let tokens = api::auth::Tokens::load_or_generate(paths.api.token_file.as_deref(), state_dir)?;
    let tls = api::auth::tls_material(
        paths.api.tls_cert.as_deref(),
        paths.api.tls_key.as_deref(),
        state_dir,
        &paths.names,
    )?;
    let listener = api::bind_tcp(addr).await?;
    let address = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    if paths.api.admin_allowed_cidrs.is_empty() {
        tracing::warn!("api.admin_allowed_cidrs is empty: the TCP listener refuses every source");
    }
    tracing::info!(%address, fingerprint = %tls.fingerprint, "admin API listening on TCP with TLS");
    Ok(TcpListener {
        listener,
        tls: tls.config,
        info: api::TcpListenerInfo {
            address,
            tls_fingerprint: tls.fingerprint,
            ca_file: tls.ca_path.map(|p| p.display().to_string()),
            token_file: tokens.path.display().to_string(),
        },
        tokens,
    })
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
