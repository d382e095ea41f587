//! The k3s runtime the boot steps drive: it renders k3s's config, checks the bundle once,
//! starts or adopts the supervised k3s, waits for readiness, and keeps a client and a watch of
//! the node for `/v1/status`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::watch;

use super::bundle::{self, BundleError};
use super::ready::{self, ReadyError};
use super::supervisor::{
    ChildSpec, ProcessStatus, RestartPolicy, Supervisor, SupervisorError, systemd_is_pid1,
};
use crate::config::{Config, K3sMode};
use crate::k8s::{Kube, KubeError, NodeSummary};
use crate::systemd::Heartbeats;

/// A first k3s start on a slow disk imports every air-gap image; give it time.
pub const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The namespace the platform's components live in.
pub const NAMESPACE: &str = "pangeo";
/// Log lines shown in status when k3s fails.
const LOG_LINES: usize = 20;
pub const WATCH_LOOP: &str = "k3s-watch";

#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Firewall(#[from] super::firewall::FirewallError),
    #[error("{0}")]
    NotRunning(String),
}

impl K3sError {
    /// When a retry may help; `None` when only a new image or config can.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            K3sError::Bundle(BundleError::Link { .. }) => Some(Duration::from_secs(30)),
            K3sError::Bundle(_) => None,
            K3sError::Supervisor(SupervisorError::CrashLoop { .. }) => None,
            K3sError::Supervisor(_) => Some(Duration::from_secs(30)),
            K3sError::Ready(ReadyError::Supervisor { .. }) => None,
            K3sError::Ready(_) => Some(Duration::from_secs(10)),
            K3sError::Kube(e) if e.is_transient() => Some(Duration::from_secs(5)),
            K3sError::Kube(_) => Some(Duration::from_secs(60)),
            K3sError::Write { .. } => Some(Duration::from_secs(30)),
            K3sError::NotRunning(_) => Some(Duration::from_secs(5)),
            K3sError::Firewall(super::firewall::FirewallError::Missing { .. }) => None,
            K3sError::Firewall(_) => Some(Duration::from_secs(30)),
        }
    }

    /// The config key at fault, if any.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            K3sError::Bundle(BundleError::NotBundled(_)) => Some("k3s.binary"),
            K3sError::Kube(KubeError::Kubeconfig { .. }) => Some("k3s.kubeconfig"),
            _ => None,
        }
    }
}

/// k3s as `/v1/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct K3sStatus {
    /// The mode in effect: `systemd`, `child`, `external` or `off` (`auto` resolved).
    pub mode: String,
    pub kubeconfig: String,
    /// The supervised process, unless the mode is `external` or `off`.
    pub process: Option<ProcessStatus>,
    /// What the bundle check found, once it ran.
    pub bundle: Option<String>,
    pub server_version: Option<String>,
    pub node: Option<NodeSummary>,
    /// The process's last log lines, when a step failed.
    pub last_log_lines: Vec<String>,
}

#[derive(Default)]
struct Inner {
    supervisor: Option<Supervisor>,
    kube: Option<Kube>,
    /// The bundle check's result: the image does not change while pangeod runs.
    bundle: Option<Result<(), BundleError>>,
    node_watch: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
pub struct K3sRuntime {
    inner: Arc<Mutex<Inner>>,
    status: watch::Sender<K3sStatus>,
    /// Checked against this root (`/` on the appliance; a temp dir in tests).
    root: PathBuf,
    policy: RestartPolicy,
}

impl Default for K3sRuntime {
    fn default() -> Self {
        Self::new(PathBuf::from("/"), RestartPolicy::default())
    }
}

impl K3sRuntime {
    pub fn new(root: PathBuf, policy: RestartPolicy) -> Self {
        Self {
            inner: Default::default(),
            status: watch::Sender::new(K3sStatus::default()),
            root,
            policy,
        }
    }

    /// The status with the process's current state.
    pub fn snapshot(&self) -> K3sStatus {
        let supervisor = self.lock().supervisor.clone();
        let mut status = self.status.borrow().clone();
        if let Some(supervisor) = supervisor {
            status.process = Some(supervisor.status());
        }
        status
    }

    /// The status without asking the supervised process (no `systemctl show`): what status
    /// requests read, with the process from the last background reading.
    pub fn snapshot_without_process(&self) -> K3sStatus {
        self.status.borrow().clone()
    }

    /// The supervised process's current state; may fork `systemctl show` (blocking).
    pub fn process_status(&self) -> Option<ProcessStatus> {
        let supervisor = self.lock().supervisor.clone();
        supervisor.map(|s| s.status())
    }

    /// The client, once the kubernetes-api step connected.
    pub fn kube(&self) -> Option<Kube> {
        self.lock().kube.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mode in effect: `auto` is `systemd` when systemd is PID 1 and the unit is installed.
    pub fn effective_mode(config: &Config) -> K3sMode {
        match config.k3s.mode {
            K3sMode::Auto if systemd_is_pid1() && unit_installed() => K3sMode::Systemd,
            K3sMode::Auto => K3sMode::Child,
            mode => mode,
        }
    }

    /// The `k3s` step: render the config, check the bundle, start or adopt k3s, wait until it
    /// is ready. Idempotent: on a running k3s it only re-checks readiness, and restarts k3s
    /// only when its rendered config changed, or on a reload (SIGHUP, a config change) when it
    /// was crash-looping: a retry alone does not restart a crash loop.
    pub async fn ensure_running(
        &self,
        config: &Config,
        reload: bool,
        progress: &(dyn Fn(&str, f64) + Sync),
    ) -> Result<String, K3sError> {
        let mode = Self::effective_mode(config);
        self.status.send_modify(|s| {
            s.mode = mode.as_str().into();
            s.kubeconfig = config.k3s.kubeconfig.display().to_string();
        });
        let result = self
            .ensure_running_inner(config, mode, reload, progress)
            .await;
        let lines = match (&result, self.lock().supervisor.clone()) {
            (Err(_), Some(supervisor)) => supervisor.last_log_lines(LOG_LINES),
            _ => Vec::new(),
        };
        self.status.send_modify(|s| s.last_log_lines = lines);
        result
    }

    async fn ensure_running_inner(
        &self,
        config: &Config,
        mode: K3sMode,
        reload: bool,
        progress: &(dyn Fn(&str, f64) + Sync),
    ) -> Result<String, K3sError> {
        let supervisor = match mode {
            K3sMode::Off | K3sMode::Auto => return Ok("k3s is off".into()),
            K3sMode::External => None,
            K3sMode::Systemd | K3sMode::Child => {
                progress("checking the bundled k3s and images", 0.05);
                self.check_bundle_once(config).await?;
                // Before k3s listens, and again at each reload (the admin networks may change).
                progress("limiting the API server's port to the admin networks", 0.07);
                let allowed = config.api.admin_allowed_cidrs.clone();
                tokio::task::spawn_blocking(move || {
                    super::firewall::apply(super::firewall::APISERVER_PORT, &allowed)
                })
                .await
                .map_err(|e| K3sError::NotRunning(format!("the firewall step panicked: {e}")))??;
                let root = self.root.clone();
                let data_dir = super::data_dir(config);
                let linked =
                    tokio::task::spawn_blocking(move || bundle::link_into(&root, &data_dir))
                        .await
                        .map_err(|e| {
                            K3sError::NotRunning(format!("linking the bundle panicked: {e}"))
                        })??;
                tracing::debug!(?linked, "the bundle is linked into k3s's data dir");
                let config_file = match mode {
                    K3sMode::Systemd => PathBuf::from(super::CONFIG_PATH),
                    _ => config.daemon.state_dir.join("k3s").join("config.yaml"),
                };
                let changed = write_if_changed(&config_file, &super::render_config(config))?;
                let existing = self.lock().supervisor.clone();
                Some(match existing {
                    Some(supervisor) => {
                        if changed || (reload && supervisor.check().is_err()) {
                            tracing::info!(changed, reload, "restarting k3s");
                            supervisor.restart().await?;
                        }
                        supervisor
                    }
                    None => {
                        let supervisor = match mode {
                            K3sMode::Systemd => {
                                Supervisor::systemd(super::UNIT, self.policy.clone())?
                            }
                            _ => Supervisor::child(
                                k3s_child(config, &config_file),
                                self.policy.clone(),
                            ),
                        };
                        self.lock().supervisor = Some(supervisor.clone());
                        supervisor
                    }
                })
            }
        };
        let ready = ready::wait_ready(
            supervisor.as_ref(),
            &config.k3s.kubeconfig,
            &super::node_name(config),
            READY_TIMEOUT,
            progress,
        )
        .await?;
        let message = match supervisor.map(|s| s.status()) {
            Some(process) => format!(
                "k3s {} ({}, pid {}), node {} Ready",
                ready.server_version,
                process.backend,
                process.pid.map_or_else(|| "?".into(), |p| p.to_string()),
                ready.node.name
            ),
            None => format!(
                "external API server {}, node {} Ready",
                ready.server_version, ready.node.name
            ),
        };
        self.status.send_modify(|s| {
            s.server_version = Some(ready.server_version.clone());
            s.node = Some(ready.node.clone());
        });
        // The client readiness was proven with is the one the later steps use.
        self.lock().kube = Some(ready.kube);
        Ok(message)
    }

    async fn check_bundle_once(&self, config: &Config) -> Result<(), K3sError> {
        if let Some(result) = self.lock().bundle.clone() {
            return result.map_err(K3sError::from);
        }
        let root = self.root.clone();
        let binary = config.k3s.binary.clone();
        let started = std::time::Instant::now();
        let report = tokio::task::spawn_blocking(move || bundle::check(&root, &binary))
            .await
            .map_err(|e| K3sError::NotRunning(format!("the bundle check panicked: {e}")))?;
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                self.status
                    .send_modify(|s| s.bundle = Some(error.to_string()));
                self.lock().bundle = Some(Err(error.clone()));
                return Err(error.into());
            }
        };
        let summary = if report.manifest {
            tracing::info!(?report, elapsed = ?started.elapsed(), "the k3s bundle matches the manifest");
            format!(
                "{} files and {} images match the manifest ({} checked against the build's record)",
                report.files, report.images, report.unpinned
            )
        } else {
            // A dev machine with its own k3s: there is no image manifest to check against.
            tracing::warn!(
                "no {} on this machine: the k3s bundle is not verified",
                bundle::MANIFEST_PATH
            );
            format!("not verified: no {}", bundle::MANIFEST_PATH)
        };
        self.status.send_modify(|s| s.bundle = Some(summary));
        self.lock().bundle = Some(Ok(()));
        Ok(())
    }

    /// The `kubernetes-api` step, on the client the k3s step proved ready: the platform
    /// namespace by server-side apply (can pangeod write?), and a watch of the node for status,
    /// started once.
    pub async fn connect(
        &self,
        config: &Config,
        heartbeats: &Heartbeats,
    ) -> Result<String, K3sError> {
        let kube = self.kube().ok_or_else(|| {
            K3sError::NotRunning("no Kubernetes client yet: the k3s step has not finished".into())
        })?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "pangeod".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        kube.apply(&namespace).await?;
        let node = super::node_name(config);
        let mut inner = self.lock();
        if inner.node_watch.as_ref().is_none_or(|w| w.is_finished()) {
            inner.node_watch = Some(tokio::spawn(watch_node(
                kube,
                node.clone(),
                self.status.clone(),
                heartbeats.clone(),
            )));
        }
        drop(inner);
        let version = self
            .status
            .borrow()
            .server_version
            .clone()
            .unwrap_or_default();
        Ok(format!(
            "API server {version}; namespace {NAMESPACE} applied; watching node {node}"
        ))
    }

    /// Stops a child k3s (a systemd unit keeps running: pangeod's restart must not touch it).
    pub async fn shutdown(&self) {
        let (supervisor, watch) = {
            let mut inner = self.lock();
            (inner.supervisor.take(), inner.node_watch.take())
        };
        if let Some(watch) = watch {
            watch.abort();
        }
        if let Some(supervisor) = supervisor {
            let took = supervisor.stop().await;
            tracing::info!(?took, "k3s supervisor stopped");
        }
    }
}

/// Keeps the node's conditions in status, by watch. Beats while the stream lives; the watcher
/// re-lists and resumes with backoff when the API server restarts.
async fn watch_node(
    kube: Kube,
    node: String,
    status: watch::Sender<K3sStatus>,
    heartbeats: Heartbeats,
) {
    let api: kube::Api<Node> = kube::Api::all(kube.client().clone());
    let fields = format!("metadata.name={node}");
    let stream =
        watcher::watcher(api, watcher::Config::default().fields(&fields)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = beat.tick() => heartbeats.beat(WATCH_LOOP),
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => {
                    let summary = NodeSummary::from_node(&n);
                    status.send_modify(|s| s.node = Some(summary));
                }
                Some(Ok(watcher::Event::Delete(_))) => status.send_modify(|s| s.node = None),
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::debug!(%error, "node watch interrupted; resuming"),
                None => return,
            }
        }
    }
}

fn k3s_child(config: &Config, config_file: &Path) -> ChildSpec {
    let dir = config.daemon.state_dir.join("k3s");
    ChildSpec {
        name: "k3s".into(),
        program: config.k3s.binary.clone(),
        args: vec!["server".into(), "--config".into(), config_file.into()],
        env: Vec::new(),
        log_file: dir.join("k3s.log"),
        pid_file: dir.join("k3s.pid"),
    }
}

fn unit_installed() -> bool {
    [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(super::UNIT).exists())
}

/// Writes `text` to `path` unless it already holds it. Returns whether it changed.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, K3sError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let fail = |source| K3sError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(true)
}
