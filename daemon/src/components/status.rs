//! Per-component status for `/v1/status`: rendered, applied (the HelmChart's generation), the
//! helm-controller job's state (by watch), and the error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use crate::k8s::Kube;
use crate::systemd::Heartbeats;

pub const JOB_WATCH_LOOP: &str = "components-watch";
/// helm-controller labels its install jobs with the chart's name.
const CHART_LABEL: &str = "helmcharts.helm.cattle.io/chart";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ComponentStatus {
    pub name: String,
    /// `pending`, `skipped`, `rendered`, `applied` or `failed`.
    pub state: String,
    /// The chart and version, for charts.
    pub chart: Option<String>,
    /// The HelmChart's generation after the last apply.
    pub generation: Option<i64>,
    /// helm-controller's job for this chart, and its state: `running`, `succeeded`, `failed`.
    pub job: Option<String>,
    pub job_state: Option<String>,
    pub message: String,
}

/// Shared between the components step, the job watch and the API.
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<Mutex<Inner>>,
    /// Notified when a release that was uninstalled (its HelmChart deleted) is applied again:
    /// the hub then comes back with an empty database, which the hub sync fills.
    reinstalled: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Inner {
    components: BTreeMap<String, ComponentStatus>,
    watch: Option<tokio::task::JoinHandle<()>>,
    /// The objects pangeod wants in the cluster, as the boot runner last rendered them.
    desired: Vec<crate::k8s::Desired>,
    drift: Option<tokio::task::JoinHandle<()>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a component's state and message, keeping what the job watch found.
    pub fn set(&self, name: &str, chart: Option<String>, state: &str, message: String) {
        let mut inner = self.lock();
        let entry = inner
            .components
            .entry(name.to_string())
            .or_insert_with(|| ComponentStatus {
                name: name.to_string(),
                state: String::new(),
                chart: None,
                generation: None,
                job: None,
                job_state: None,
                message: String::new(),
            });
        entry.state = state.to_string();
        entry.message = message;
        if chart.is_some() {
            entry.chart = chart;
        }
    }

    pub fn set_generation(&self, name: &str, generation: i64) {
        if let Some(entry) = self.lock().components.get_mut(name) {
            entry.generation = Some(generation);
        }
    }

    pub fn list(&self) -> Vec<ComponentStatus> {
        self.lock().components.values().cloned().collect()
    }

    /// Starts the job watch once per client.
    pub fn watch_jobs(&self, kube: &Kube, namespace: &str, heartbeats: &Heartbeats) {
        let task = tokio::spawn(watch_jobs(
            kube.clone(),
            namespace.to_string(),
            self.clone(),
            heartbeats.clone(),
        ));
        if let Some(old) = self.lock().watch.replace(task) {
            old.abort();
        }
    }

    /// Hands over the objects about to be applied, and starts the level-triggered reconcile
    /// (`drift.rs`) once per client.
    pub fn set_desired(&self, kube: &Kube, namespace: &str, objects: Vec<crate::k8s::Desired>) {
        let mut inner = self.lock();
        inner.desired = objects;
        if inner.drift.as_ref().is_none_or(|t| t.is_finished()) {
            inner.drift = Some(tokio::spawn(super::drift::run(
                kube.clone(),
                namespace.to_string(),
                self.clone(),
            )));
        }
    }

    /// Waits until a release is applied again after an uninstall.
    pub async fn reinstalled(&self) {
        self.reinstalled.notified().await
    }

    pub(super) fn notify_reinstalled(&self) {
        self.reinstalled.notify_one();
    }

    pub fn desired(&self) -> Vec<crate::k8s::Desired> {
        self.lock().desired.clone()
    }

    /// Whether `chart` (as stored) has the spec pangeod wants for `name`: then a new
    /// generation of it is pangeod's own apply, not drift.
    pub fn is_desired_spec(&self, name: &str, chart: &crate::k8s::HelmChart) -> bool {
        let Ok(stored) = serde_json::to_value(&chart.spec) else {
            return false;
        };
        self.lock().desired.iter().any(|d| {
            let object = d.object();
            object.types.as_ref().is_some_and(|t| t.kind == "HelmChart")
                && object.metadata.name.as_deref() == Some(name)
                && object.data.get("spec") == Some(&stored)
        })
    }

    /// Whether `name` is a HelmChart pangeod applied.
    pub fn owns(&self, name: &str) -> bool {
        self.lock()
            .components
            .get(name)
            .is_some_and(|c| c.generation.is_some())
    }

    /// The generation of `name` after pangeod's last apply.
    pub fn applied_generation(&self, name: &str) -> Option<i64> {
        self.lock().components.get(name).and_then(|c| c.generation)
    }

    pub fn watching(&self) -> bool {
        self.lock().watch.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn job_seen(&self, job: &Job) {
        let Some(chart) = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CHART_LABEL))
        else {
            return;
        };
        let state = job_state(job);
        if let Some(entry) = self.lock().components.get_mut(chart) {
            entry.job = job.metadata.name.clone();
            entry.job_state = Some(state.to_string());
        }
    }
}

fn job_state(job: &Job) -> &'static str {
    let status = job.status.as_ref();
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    if condition("Complete") {
        "succeeded"
    } else if condition("Failed") {
        "failed"
    } else {
        "running"
    }
}

async fn watch_jobs(kube: Kube, namespace: String, tracker: Tracker, heartbeats: Heartbeats) {
    let api: kube::Api<Job> = kube::Api::namespaced(kube.client().clone(), &namespace);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(CHART_LABEL)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = beat.tick() => heartbeats.beat(JOB_WATCH_LOOP),
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))) => tracker.job_seen(&job),
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::debug!(%error, "job watch interrupted; resuming"),
                None => return,
            }
        }
    }
}
