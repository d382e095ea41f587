//! Level-triggered reconciling of what pangeod owns in the cluster: a HelmChart that someone
//! deletes or edits (`kubectl delete helmchart jupyterhub`, `kubectl edit`) is put back at once,
//! without a reload, and every object is applied again at each resync, which puts back any
//! other drift (server-side apply under pangeod's field manager is a no-op when nothing moved).
//!
//! The boot runner hands over the desired objects before it applies them
//! ([`super::Tracker::set_desired`]), so a watch event caused by the runner's own apply makes
//! this loop apply the same objects again (a no-op), never an older set.

use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use super::Tracker;
use crate::k8s::HelmChart;
use crate::k8s::Kube;

/// Every object is applied again this often, whatever the watch saw.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Events closer together than this are one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
const APPLY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a deleted HelmChart waits for helm-controller's uninstall before it is put back.
const UNINSTALL_WAIT: Duration = Duration::from_secs(600);

/// Why the loop applies again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Deleted(String),
    Changed { name: String, generation: i64 },
    Resync,
}

/// What a HelmChart watch event means for pangeod: `None` when it is what pangeod applied.
pub fn drift_of(tracker: &Tracker, event: &watcher::Event<HelmChart>) -> Option<Drift> {
    match event {
        watcher::Event::Delete(chart) => {
            let name = chart.metadata.name.clone().unwrap_or_default();
            tracker.owns(&name).then_some(Drift::Deleted(name))
        }
        // A chart being deleted is left alone until it is gone (its Delete event comes then):
        // an apply to it now would make helm-controller install while it uninstalls.
        watcher::Event::Apply(chart) | watcher::Event::InitApply(chart)
            if chart.metadata.deletion_timestamp.is_some() =>
        {
            None
        }
        watcher::Event::Apply(chart) | watcher::Event::InitApply(chart) => {
            let name = chart.metadata.name.clone().unwrap_or_default();
            let generation = chart.metadata.generation.unwrap_or(0);
            match tracker.applied_generation(&name) {
                // pangeod's own apply (a reload's) is seen before its generation is recorded:
                // the same spec as the desired one is not drift.
                Some(applied)
                    if applied != generation && !tracker.is_desired_spec(&name, chart) =>
                {
                    Some(Drift::Changed { name, generation })
                }
                _ => None,
            }
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

pub(super) async fn run(kube: Kube, namespace: String, tracker: Tracker) {
    let api: kube::Api<HelmChart> = kube::Api::namespaced(kube.client().clone(), &namespace);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        let drift = tokio::select! {
            _ = resync.tick() => Drift::Resync,
            event = stream.next() => match event {
                Some(Ok(event)) => match drift_of(&tracker, &event) {
                    Some(drift) => drift,
                    None => continue,
                },
                Some(Err(error)) => {
                    tracing::debug!(%error, "HelmChart watch interrupted; resuming");
                    continue;
                }
                None => return,
            },
        };
        // Let a burst (a delete and its re-creation, several charts) settle into one apply.
        tokio::time::sleep(DEBOUNCE).await;
        wait_for_deletions(&kube, &namespace).await;
        apply_again(&kube, &tracker, &drift).await;
    }
}

/// Waits until no HelmChart in `namespace` is being deleted and no uninstall job runs, so that
/// nothing is applied into the middle of an uninstall (see [`wait_for_uninstall`]). Called
/// before every apply of the components, by this loop and by the components step.
pub async fn wait_for_deletions(kube: &Kube, namespace: &str) {
    let api: kube::Api<HelmChart> = kube::Api::namespaced(kube.client().clone(), namespace);
    let started = tokio::time::Instant::now();
    let mut told = false;
    while started.elapsed() < UNINSTALL_WAIT {
        let terminating: Vec<String> = match api.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|c| c.metadata.deletion_timestamp.is_some())
                .filter_map(|c| c.metadata.name)
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "cannot list the HelmCharts; applying without waiting");
                return;
            }
        };
        if terminating.is_empty() {
            break;
        }
        if !told {
            tracing::warn!(charts = ?terminating, "HelmCharts are being deleted (helm-controller uninstalls their releases); pangeod applies again once they are gone");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for chart in [
        super::HUB_RELEASE,
        super::GATEWAY_RELEASE,
        super::STORAGE_RELEASE,
    ] {
        wait_for_uninstall(kube, namespace, chart).await;
    }
}

/// A deleted HelmChart makes helm-controller uninstall its release (job `helm-delete-<name>`,
/// `helm uninstall --wait`, which also deletes the release's volume claims, the hub's database
/// among them). Applying the chart again while that runs races it: the install re-creates what
/// the uninstall waits to see gone, the uninstall never ends, and the hub's pod waits forever
/// for a claim that is being deleted (seen on the test cluster). So the chart is put back once
/// the uninstall has finished (or after [`UNINSTALL_WAIT`], or when the job cannot be read).
async fn wait_for_uninstall(kube: &Kube, namespace: &str, chart: &str) {
    use k8s_openapi::api::batch::v1::Job;
    let jobs: kube::Api<Job> = kube::Api::namespaced(kube.client().clone(), namespace);
    let job_name = format!("helm-delete-{chart}");
    let started = tokio::time::Instant::now();
    let mut told = false;
    while started.elapsed() < UNINSTALL_WAIT {
        let running = match jobs.get_opt(&job_name).await {
            // A job without a status yet has not run yet: it is running as far as this goes.
            Ok(Some(job)) => job.status.is_none_or(|s| {
                s.completion_time.is_none()
                    && !s
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Failed" && c.status == "True")
            }),
            Ok(None) => false,
            Err(error) => {
                tracing::debug!(%error, job = %job_name, "cannot read the uninstall job; putting the chart back now");
                false
            }
        };
        if !running {
            if told {
                tracing::info!(
                    chart,
                    waited_s = started.elapsed().as_secs(),
                    "helm-controller's uninstall finished; putting the chart back"
                );
            }
            return;
        }
        if !told {
            tracing::warn!(chart, job = %job_name, "HelmChart deleted outside pangeod: waiting for helm-controller's uninstall to finish before putting it back (the release's volume claims, the hub's database among them, are deleted by it; home volumes are not part of the release)");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::warn!(chart, job = %job_name, "the uninstall did not finish in time; putting the chart back anyway");
}

async fn apply_again(kube: &Kube, tracker: &Tracker, drift: &Drift) {
    let desired = tracker.desired();
    if desired.is_empty() {
        return;
    }
    match drift {
        Drift::Deleted(name) => {
            tracing::warn!(chart = %name, "HelmChart deleted outside pangeod; applying it again")
        }
        Drift::Changed { name, generation } => tracing::warn!(
            chart = %name,
            generation,
            "HelmChart changed outside pangeod; applying pangeod's again"
        ),
        Drift::Resync => tracing::debug!("resync: applying the components again"),
    }
    match kube.apply_all(&desired, APPLY_DEADLINE).await {
        Ok(report) => {
            if matches!(drift, Drift::Deleted(_)) {
                tracker.notify_reinstalled();
            }
            for object in report
                .stored
                .iter()
                .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "HelmChart"))
            {
                if let (Some(name), Some(generation)) =
                    (&object.metadata.name, object.metadata.generation)
                {
                    tracker.set_generation(name, generation);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "applying the components again failed; retried at the next event or resync")
        }
    }
}
