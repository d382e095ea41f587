//! Rollout readiness of each component: every Deployment, StatefulSet and DaemonSet its Helm
//! release made (Helm 3 annotates each with `meta.helm.sh/release-name`) has all its replicas
//! updated and ready.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::ResourceExt;
use serde::Serialize;

use std::sync::Arc;

const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";

/// One workload of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    /// Updated and ready replicas / desired.
    pub ready: i32,
    pub desired: i32,
    pub rolled_out: bool,
}

/// A release's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rollout {
    /// True when the release has workloads and every one is rolled out.
    pub ready: bool,
    pub workloads: Vec<Workload>,
}

fn deployment(d: &Deployment) -> Workload {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = updated.min(available);
    Workload {
        kind: "Deployment".into(),
        name: d.name_any(),
        ready,
        desired,
        rolled_out: observed
            && updated == desired
            && available == desired
            && status.replicas.unwrap_or(0) == desired,
    }
}

fn stateful_set(s: &StatefulSet) -> Workload {
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let same_revision =
        status.update_revision.is_none() || status.current_revision == status.update_revision;
    Workload {
        kind: "StatefulSet".into(),
        name: s.name_any(),
        ready: ready.min(status.updated_replicas.unwrap_or(ready)),
        desired,
        rolled_out: observed && ready == desired && same_revision,
    }
}

fn daemon_set(d: &DaemonSet) -> Workload {
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let desired = status.desired_number_scheduled;
    let ready = status
        .number_ready
        .min(status.updated_number_scheduled.unwrap_or(0));
    Workload {
        kind: "DaemonSet".into(),
        name: d.name_any(),
        ready,
        desired,
        rolled_out: observed && ready == desired,
    }
}

fn of_release<K: kube::Resource>(object: &K, release: &str) -> bool {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RELEASE_ANNOTATION))
        == Some(&release.to_string())
}

/// The rollout of each release in `namespace`, in the order given.
/// Each release's workloads and whether every one is rolled out, from the platform
/// namespace's objects (the status reflectors' stores).
pub fn rollouts(
    deployments: &[Arc<Deployment>],
    stateful_sets: &[Arc<StatefulSet>],
    daemon_sets: &[Arc<DaemonSet>],
    releases: &[&str],
) -> Vec<(String, Rollout)> {
    releases
        .iter()
        .map(|release| {
            let mut workloads: Vec<Workload> = deployments
                .iter()
                .filter(|o| of_release(o.as_ref(), release))
                .map(|o| deployment(o))
                .chain(
                    stateful_sets
                        .iter()
                        .filter(|o| of_release(o.as_ref(), release))
                        .map(|o| stateful_set(o)),
                )
                .chain(
                    daemon_sets
                        .iter()
                        .filter(|o| of_release(o.as_ref(), release))
                        .map(|o| daemon_set(o)),
                )
                .collect();
            workloads.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
            let ready = !workloads.is_empty() && workloads.iter().all(|w| w.rolled_out);
            (release.to_string(), Rollout { ready, workloads })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_is_rolled_out_when_every_replica_is_updated_and_available() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "hub", "generation": 2 },
            "spec": { "replicas": 1, "selector": {}, "template": {} },
            "status": { "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 },
        }))
        .unwrap();
        assert!(deployment(&d).rolled_out);
        // A new generation not yet seen by the controller is not rolled out.
        d.metadata.generation = Some(3);
        assert!(!deployment(&d).rolled_out);
        d.metadata.generation = Some(2);
        d.status.as_mut().unwrap().available_replicas = Some(0);
        let w = deployment(&d);
        assert!(!w.rolled_out);
        assert_eq!((w.ready, w.desired), (0, 1));
    }
}
