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
        watcher::Event::Apply(chart) | watcher::Event::InitApply(chart) => {
            let name = chart.metadata.name.clone().unwrap_or_default();
            let generation = chart.metadata.generation.unwrap_or(0);
            match tracker.applied_generation(&name) {
                Some(applied) if applied != generation => Some(Drift::Changed { name, generation }),
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
        apply_again(&kube, &tracker, &drift).await;
    }
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
