//! The boot flow: one ordered list of named steps, each idempotent, each persisted, so a
//! restart resumes and `/v1/status` and systemd's `STATUS=` always say where the boot is.
//!
//! Later issues add steps (components) to [`BOOT_STEPS`].

pub mod credentials;
mod preflight;
mod steps;

pub use steps::{PatchError, PatchOutcome, apply_config_patch};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::driver::{Driver, Job, Outcome, Why};
use crate::state::{State, StateCall, StepRecord, now};
use crate::systemd::{Heartbeats, Notifier};

/// A boot step, in the order the platform comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Load and validate the config files, the portal's drop-ins and the API overlay.
    Config,
    /// Kernel features, free disk, the data disk, and the DNS of a custom domain.
    Preflight,
    /// A first directory sync with FreeIPA: who may log in, and who is admin.
    DirectorySync,
    /// The LVM volume group for the homes, on the data disk.
    Storage,
    /// Render k3s's config, check the bundle, start or adopt k3s, wait until it is ready.
    K3s,
    /// A client for the API server: its version, the platform namespace, a watch of the node.
    KubernetesApi,
    /// Render, validate and apply the platform: storage, JupyterHub, Dask Gateway, secrets.
    Components,
}

/// Directory sync comes before k3s: who may log in does not depend on Kubernetes, and an
/// image without k3s still syncs and says why it stops.
pub const BOOT_STEPS: &[Step] = &[
    Step::Config,
    Step::Preflight,
    Step::DirectorySync,
    Step::Storage,
    Step::K3s,
    Step::KubernetesApi,
    Step::Components,
];

/// The immutable keys are locked when this step first succeeds: from then on the platform is
/// built on them. (The components step, which bakes the domain into certificates, takes this
/// role when it exists.)
const LOCK_KEYS_AFTER: Step = Step::Preflight;

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Config => "config",
            Step::Preflight => "preflight",
            Step::DirectorySync => "directory-sync",
            Step::Storage => "storage",
            Step::K3s => "k3s",
            Step::KubernetesApi => "kubernetes-api",
            Step::Components => "components",
        }
    }

    /// Whether a failure stops the later steps. Who may log in does not decide whether
    /// Kubernetes comes up: a FreeIPA outage on first boot must not hold the platform back.
    /// Nor does the homes' volume group: without it new home volumes cannot be made, but the
    /// hub, the gateway and existing homes still run, and status says what is wrong.
    fn blocks_later_steps(self) -> bool {
        !matches!(self, Step::DirectorySync | Step::Storage)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    /// Not part of this machine's boot, by config (e.g. `k3s.mode = "off"`); the message says why.
    Skipped,
}

impl StepState {
    fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }

    /// Done, or skipped by config: nothing is left to do.
    pub fn is_settled(self) -> bool {
        matches!(self, StepState::Done | StepState::Skipped)
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => StepState::Running,
            "done" => StepState::Done,
            "failed" => StepState::Failed,
            "skipped" => StepState::Skipped,
            _ => StepState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepStatus {
    pub name: &'static str,
    pub state: StepState,
    pub message: String,
    /// 0.0 to 1.0 within this step.
    pub progress: f64,
    /// How many times the step has been started, across restarts.
    pub attempts: i64,
    pub updated_at: String,
    /// The config key at fault, when a step failed because of a setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Steps are pending or running.
    Booting,
    /// Every step is done.
    Ready,
    /// A step failed; the daemon stays up and says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BootStatus {
    pub phase: Phase,
    pub steps: Vec<StepStatus>,
    /// The config revision in force, if any config has passed validation.
    pub config_revision: Option<i64>,
    /// Why the last reload was refused, while the previous config stays in force.
    pub reload_error: Option<String>,
}

impl BootStatus {
    /// One line for systemd's `STATUS=`.
    pub fn summary(&self) -> String {
        let total = self.steps.len();
        let done = self.steps.iter().filter(|s| s.state.is_settled()).count();
        if let Some(failed) = self.steps.iter().find(|s| s.state == StepState::Failed) {
            return format!("failed at {}: {}", failed.name, failed.message);
        }
        if let Some(running) = self.steps.iter().find(|s| s.state == StepState::Running) {
            return format!(
                "step {}/{total} {}: {}",
                done + 1,
                running.name,
                running.message
            );
        }
        match self.phase {
            Phase::Ready => format!("ready: {done}/{total} boot steps done"),
            _ => format!("booting: {done}/{total} boot steps done"),
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Why a step failed, and whether waiting may fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    pub key: Option<String>,
    /// `None`: only a new config (SIGHUP or the API) can fix it.
    pub retry_after: Option<Duration>,
}

/// Reload requests from SIGHUP and the API. Requests that arrive while a reload runs are
/// coalesced into one more run, so a burst of config changes costs one or two reloads.
#[derive(Default)]
struct ReloadRequests {
    notify: Notify,
    actor: std::sync::Mutex<Option<String>>,
}

/// Handles for the rest of the daemon.
#[derive(Clone)]
pub struct BootHandle {
    pub status: watch::Receiver<BootStatus>,
    pub config: watch::Receiver<Option<Arc<Config>>>,
    reloads: Arc<ReloadRequests>,
}

impl BootHandle {
    /// Asks the runner to re-read the config and re-run the steps.
    pub fn request_reload(&self, actor: &str) {
        *self.reloads.actor.lock().unwrap_or_else(|p| p.into_inner()) = Some(actor.to_string());
        self.reloads.notify.notify_one();
    }
}

pub struct BootRunner {
    config_path: PathBuf,
    directory: crate::directory::DirectorySync,
    state: Arc<State>,
    notifier: Notifier,
    heartbeats: Heartbeats,
    status: watch::Sender<BootStatus>,
    config: watch::Sender<Option<Arc<Config>>>,
    reloads: Arc<ReloadRequests>,
    k3s: crate::k3s::K3sRuntime,
    components: crate::components::Tracker,
    /// Whether the steps ran once in this process (the next timer run is a retry).
    ran: bool,
}

/// The boot runner as a loop: the steps at once, then again on a reload (a wake) or when a
/// failed step's retry is due (the timer).
impl Job for BootRunner {
    /// The actor of the reload.
    type Wake = String;

    async fn wake(&mut self) -> Option<String> {
        // A `notify_one` that meets no waiter is kept as a permit, so a reload requested while
        // the steps run is served right after them.
        self.reloads.notify.notified().await;
        Some(
            self.reloads
                .actor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "pangeod".into()),
        )
    }

    async fn run(&mut self, why: Why<String>) -> Outcome {
        let retry = match why {
            Why::Timer => {
                if self.ran {
                    tracing::info!("retrying the failed boot step");
                }
                self.ran = true;
                self.run_steps("pangeod", false).await
            }
            Why::Wake(actor) => {
                self.ran = true;
                self.notifier.reloading();
                let retry = self.run_steps(&actor, true).await;
                self.notifier.reloaded();
                retry
            }
        };
        // A failed step asks for its own retry time (the steps know why they failed).
        Outcome::Done(retry)
    }
}

/// The sooner of two retries; `None` is "never".
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub const LOOP_NAME: &str = "boot";

impl BootRunner {
    /// Restores the persisted step states, so status shows the last boot until steps re-run.
    pub fn new(
        config_path: PathBuf,
        state: Arc<State>,
        directory: crate::directory::DirectorySync,
        k3s: crate::k3s::K3sRuntime,
        components: crate::components::Tracker,
        notifier: Notifier,
        heartbeats: Heartbeats,
    ) -> Result<(Self, BootHandle), crate::state::StateError> {
        let saved = state.steps()?;
        let steps = BOOT_STEPS
            .iter()
            .map(|step| {
                let record = saved.iter().find(|r| r.name == step.name());
                StepStatus {
                    name: step.name(),
                    state: record.map_or(StepState::Pending, |r| StepState::parse(&r.state)),
                    message: record.map(|r| r.message.clone()).unwrap_or_default(),
                    progress: record.map_or(0.0, |r| r.progress),
                    attempts: record.map_or(0, |r| r.attempts),
                    updated_at: record.map(|r| r.updated_at.clone()).unwrap_or_else(now),
                    key: None,
                }
            })
            .collect();
        let initial = BootStatus {
            phase: Phase::Booting,
            steps,
            // Like the steps, the revision last in force shows until the config step runs.
            config_revision: state.latest_config_revision()?.map(|r| r.id),
            reload_error: None,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let (config_tx, config_rx) = watch::channel(None);
        let reloads = Arc::new(ReloadRequests::default());
        heartbeats.beat(LOOP_NAME);
        Ok((
            Self {
                config_path,
                directory,
                state,
                notifier,
                heartbeats,
                status: status_tx,
                config: config_tx,
                reloads: reloads.clone(),
                k3s,
                components,
                ran: false,
            },
            BootHandle {
                status: status_rx,
                config: config_rx,
                reloads,
            },
        ))
    }

    /// Runs the steps, then serves reloads and retries until `cancel` is cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let driver = Driver::new(LOOP_NAME, self.heartbeats.clone(), cancel);
        driver.drive(self).await;
    }

    /// Runs every step in order, stopping at the first failure. Returns when to retry.
    async fn run_steps(&mut self, actor: &str, reload: bool) -> Option<Duration> {
        let mut ctx = steps::StepContext {
            config_path: &self.config_path,
            directory: &self.directory,
            state: &self.state,
            current: self.config.borrow().clone(),
            actor,
            reload,
            revision: None,
            k3s: &self.k3s,
            components: &self.components,
            heartbeats: &self.heartbeats,
            progress: steps::Progress {
                status: self.status.clone(),
                notifier: self.notifier.clone(),
                index: 0,
            },
        };
        // A failed step that does not block the later ones: the soonest retry it asked for.
        let mut deferred: Option<Option<Duration>> = None;
        for (index, step) in BOOT_STEPS.iter().enumerate() {
            ctx.progress.index = index;
            self.set_step(index, StepState::Running, "running".into(), 0.0, None, true)
                .await;
            // The driver beats while this is polled: a step that blocks the thread stops the
            // beats, and the watchdog notices.
            let outcome = steps::run(*step, &mut ctx).await;
            if let Some(revision) = ctx.revision {
                self.status
                    .send_modify(|s| s.config_revision = Some(revision));
            }
            match outcome {
                Ok(steps::StepOutcome::Done(message)) => {
                    if *step == Step::Config {
                        self.status.send_modify(|s| s.reload_error = None);
                        self.config.send_replace(ctx.current.clone());
                    }
                    self.set_step(index, StepState::Done, message, 1.0, None, false)
                        .await;
                    if *step == LOCK_KEYS_AFTER {
                        self.lock_unlocked_keys(actor).await;
                    }
                }
                Ok(steps::StepOutcome::Skipped(message)) => {
                    self.set_step(index, StepState::Skipped, message, 1.0, None, false)
                        .await;
                }
                Ok(steps::StepOutcome::ReloadRefused(error)) => {
                    // The previous config stays in force; the platform is not disturbed.
                    let message = error.message.clone();
                    self.status
                        .send_modify(|s| s.reload_error = Some(message.clone()));
                    self.record_event(
                        actor,
                        "config.reload_refused",
                        serde_json::json!({ "error": message, "key": error.key }),
                    )
                    .await;
                    tracing::warn!(error = %error.message, "config reload refused; keeping the config in force");
                    self.set_step(
                        index,
                        StepState::Done,
                        "config in force; the last reload was refused".into(),
                        1.0,
                        None,
                        false,
                    )
                    .await;
                }
                Err(error) => {
                    tracing::error!(step = step.name(), error = %error.message, "boot step failed");
                    self.record_event(
                        "pangeod",
                        "boot.step_failed",
                        serde_json::json!({ "step": step.name(), "error": error.message, "key": error.key }),
                    ).await;
                    let retry = error.retry_after;
                    self.set_step(
                        index,
                        StepState::Failed,
                        error.message,
                        0.0,
                        error.key,
                        false,
                    )
                    .await;
                    if !step.blocks_later_steps() {
                        deferred = Some(sooner(deferred.flatten(), retry));
                        continue;
                    }
                    for later in index + 1..BOOT_STEPS.len() {
                        self.set_step(
                            later,
                            StepState::Pending,
                            "waiting for earlier steps".into(),
                            0.0,
                            None,
                            false,
                        )
                        .await;
                    }
                    self.status.send_modify(|s| s.phase = Phase::Failed);
                    self.notifier.status(&self.status.borrow().summary());
                    return sooner(deferred.flatten(), retry);
                }
            }
        }
        if let Some(retry) = deferred {
            self.status.send_modify(|s| s.phase = Phase::Failed);
            self.notifier.status(&self.status.borrow().summary());
            return retry;
        }
        let first_ready = self.status.borrow().phase != Phase::Ready;
        self.status.send_modify(|s| s.phase = Phase::Ready);
        if first_ready {
            self.on_ready(actor).await;
        }
        self.notifier.status(&self.status.borrow().summary());
        None
    }

    /// Once the platform is built on them, the immutable keys are locked for good. A key not
    /// locked yet (one that a newer image made immutable) is locked at its current value.
    async fn lock_unlocked_keys(&self, actor: &str) {
        let Some(config) = self.config.borrow().clone() else {
            return;
        };
        match self.state.call(|s| s.locked_keys()).await {
            Ok(locked) => {
                let values: Vec<(String, String)> = config
                    .immutable_values()
                    .into_iter()
                    .filter(|(key, _)| !locked.contains_key(key))
                    .collect();
                if values.is_empty() {
                    return;
                }
                let to_lock = values.clone();
                match self.state.call(move |s| s.lock_keys(&to_lock)).await {
                    Ok(()) => {
                        let keys: serde_json::Map<_, _> = values
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect();
                        self.record_event(
                            actor,
                            "config.keys_locked",
                            serde_json::json!({ "keys": keys }),
                        )
                        .await;
                    }
                    Err(error) => tracing::error!(%error, "cannot lock the immutable keys"),
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the locked keys"),
        }
    }

    async fn on_ready(&self, actor: &str) {
        let Some(config) = self.config.borrow().clone() else {
            return;
        };
        self.record_event(
            actor,
            "boot.ready",
            serde_json::json!({ "hub_url": config.hub_url() }),
        )
        .await;
        tracing::info!(hub_url = %config.hub_url(), "all boot steps done");
    }

    async fn set_step(
        &self,
        index: usize,
        state: StepState,
        message: String,
        progress: f64,
        key: Option<String>,
        started: bool,
    ) {
        let mut record = None;
        self.status.send_modify(|status| {
            // A reload of a ready platform keeps it ready unless a step fails: readiness
            // must not flap for pollers each time the config changes.
            if state == StepState::Running && status.phase == Phase::Failed {
                status.phase = Phase::Booting;
            }
            if let Some(step) = status.steps.get_mut(index) {
                step.state = state;
                step.message = message;
                step.progress = progress;
                step.key = key;
                step.updated_at = now();
                if started {
                    step.attempts += 1;
                }
                record = Some(StepRecord {
                    name: step.name.to_string(),
                    state: state.as_str().to_string(),
                    message: step.message.clone(),
                    progress,
                    attempts: step.attempts,
                    updated_at: step.updated_at.clone(),
                });
            }
        });
        if let Some(record) = record {
            let name = record.name.clone();
            if let Err(error) = self.state.call(move |s| s.save_step(&record)).await {
                tracing::error!(%error, step = name, "cannot persist the boot step");
            }
        }
        self.notifier.status(&self.status.borrow().summary());
    }

    async fn record_event(&self, actor: &str, action: &str, details: serde_json::Value) {
        let (who, what) = (actor.to_string(), action.to_string());
        let recorded = self
            .state
            .call(move |s| s.record_event(&who, &what, details))
            .await;
        if let Err(error) = recorded {
            tracing::error!(%error, action, "cannot record the event");
        }
    }
}
