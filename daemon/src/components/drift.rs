//! Level-triggered reconciling of what pangeod owns in the cluster: a HelmChart, a
//! HelmChartConfig or a StorageClass that someone deletes or edits (`kubectl delete helmchart
//! jupyterhub`, `kubectl edit storageclass pangeo-homes`) is put back at once, without a reload,
//! and every object is applied again at each resync, which puts back any other drift
//! (server-side apply under pangeod's field manager is a no-op when nothing moved, so applying
//! again on an event that pangeod's own apply caused makes no further event).
//!
//! The boot runner hands over the desired objects before it applies them
//! ([`super::Tracker::set_desired`]), so a watch event caused by the runner's own apply makes
//! this loop apply the same objects again (a no-op), never an older set.

use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use k8s_openapi::api::storage::v1::StorageClass;

use super::Tracker;
use crate::k8s::Kube;
use crate::k8s::{HelmChart, HelmChartConfig};

/// Every object is applied again this often, whatever the watch saw.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Events closer together than this are one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
const APPLY_DEADLINE: Duration = Duration::from_secs(60);
/// How long an apply waits for helm-controller's uninstalls before it goes ahead.
const UNINSTALL_WAIT: Duration = Duration::from_secs(600);

/// Why the loop applies again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Deleted(String),
    Changed {
        name: String,
        generation: i64,
    },
    /// A StorageClass or HelmChartConfig of pangeod's changed or went (`Kind name`).
    Other(String),
    Resync,
}

/// What a watch event of another kind pangeod applies (StorageClass, HelmChartConfig) means:
/// drift when the object is one of the desired ones (by `Kind namespace/name`). pangeod's own
/// apply shows here too; applying again then changes nothing and makes no new event.
pub fn other_drift<K>(tracker: &Tracker, kind: &str, event: &watcher::Event<K>) -> Option<Drift>
where
    K: kube::Resource,
{
    let object = match event {
        watcher::Event::Delete(object) | watcher::Event::Apply(object) => object,
        // The first listing: the state at start, which the boot's own apply settles.
        watcher::Event::InitApply(_) | watcher::Event::Init | watcher::Event::InitDone => {
            return None;
        }
    };
    let name = crate::k8s::describe(kind, object.meta());
    tracker
        .desired()
        .iter()
        .any(|d| d.describe() == name)
        .then_some(Drift::Other(name))
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
    let charts = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|event| ("HelmChart", event.map(|e| drift_of(&tracker, &e))));
    let classes = labelled::<StorageClass>(&kube, &tracker, "StorageClass");
    let configs = labelled::<HelmChartConfig>(&kube, &tracker, "HelmChartConfig");
    let stream =
        futures_util::stream::select(charts, futures_util::stream::select(classes, configs));
    let mut stream = std::pin::pin!(stream);
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        let drift = tokio::select! {
            _ = resync.tick() => Drift::Resync,
            event = stream.next() => match event {
                Some((_, Ok(Some(drift)))) => drift,
                Some((_, Ok(None))) => continue,
                Some((kind, Err(error))) => {
                    // A kind the cluster does not serve (HelmChartConfig outside k3s) ends up
                    // here again and again, with the watcher's backoff between.
                    tracing::debug!(%error, kind, "watch interrupted; resuming");
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

/// A watch of the objects of kind `K` that carry pangeod's label (the other kinds it applies),
/// as drift events.
fn labelled<'a, K>(
    kube: &Kube,
    tracker: &'a Tracker,
    kind: &'static str,
) -> impl futures_util::Stream<Item = (&'static str, Result<Option<Drift>, watcher::Error>)> + 'a
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let ours = watcher::Config::default().labels(&format!(
        "{}={}",
        super::MANAGED_BY.0,
        super::MANAGED_BY.1
    ));
    watcher::watcher(kube::Api::<K>::all(kube.client().clone()), ours)
        .default_backoff()
        .map(move |event| (kind, event.map(|e| other_drift(tracker, kind, &e))))
}

/// Waits until no HelmChart in `namespace` is being deleted and no uninstall job runs, so that
/// nothing is applied into the middle of an uninstall. Called before every apply of the
/// components, by this loop and by the components step.
///
/// A deleted HelmChart makes helm-controller uninstall its release (job `helm-delete-<name>`,
/// `helm uninstall --wait`, which also deletes the release's volume claims, the hub's database
/// among them). Applying the chart again while that runs races it: the install re-creates what
/// the uninstall waits to see gone, the uninstall never ends, and the hub's pod waits forever
/// for a claim that is being deleted (seen on the test cluster). So the charts are applied once
/// the uninstalls have finished, or after [`UNINSTALL_WAIT`], or when that cannot be read.
pub async fn wait_for_deletions(kube: &Kube, namespace: &str) {
    use k8s_openapi::api::batch::v1::Job;
    let charts: kube::Api<HelmChart> = kube::Api::namespaced(kube.client().clone(), namespace);
    wait_while("HelmCharts being deleted", || async {
        let list = charts
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let terminating: Vec<String> = list
            .items
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_some())
            .filter_map(|c| c.metadata.name)
            .collect();
        Ok((!terminating.is_empty()).then(|| format!("{terminating:?}")))
    })
    .await;
    let jobs: kube::Api<Job> = kube::Api::namespaced(kube.client().clone(), namespace);
    for chart in [
        super::HUB_RELEASE,
        super::GATEWAY_RELEASE,
        super::STORAGE_RELEASE,
    ] {
        let name = format!("helm-delete-{chart}");
        wait_while("helm-controller's uninstall", || async {
            let job = jobs.get_opt(&name).await.map_err(|e| e.to_string())?;
            // A job without a status yet has not run yet: it is running as far as this goes.
            let running = job.is_some_and(|job| {
                job.status.is_none_or(|s| {
                    s.completion_time.is_none()
                        && !s
                            .conditions
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Failed" && c.status == "True")
                })
            });
            Ok(running.then(|| format!("job {name}")))
        })
        .await;
    }
}

/// Polls `check` every 2 s while it names something still in the way (`Ok(Some(what))`), up
/// to [`UNINSTALL_WAIT`]; an error ends the wait (the apply goes ahead rather than stall).
async fn wait_while<F, Fut>(waiting_for: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    let started = tokio::time::Instant::now();
    let mut told = false;
    while started.elapsed() < UNINSTALL_WAIT {
        match check().await {
            Ok(None) => {
                if told {
                    tracing::info!(
                        waited_s = started.elapsed().as_secs(),
                        "{waiting_for}: done; applying the components"
                    );
                }
                return;
            }
            Ok(Some(what)) if !told => {
                tracing::warn!(%what, "{waiting_for}: pangeod applies the components once that has finished (an uninstall deletes the release's claims, the hub's database among them; home volumes are not part of a release)");
                told = true;
            }
            Ok(Some(_)) => {}
            Err(error) => {
                tracing::debug!(%error, "{waiting_for}: cannot be read; applying without waiting");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::warn!("{waiting_for}: not finished within {UNINSTALL_WAIT:?}; applying anyway");
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
        Drift::Other(object) => {
            tracing::warn!(%object, "changed or deleted outside pangeod; applying pangeod's again")
        }
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
