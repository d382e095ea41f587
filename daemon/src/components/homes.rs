//! The users' home volumes, as admins see and manage them: "Backups are not provided - if
//! required, they are the responsibility of the user or cluster admins." Each home is a
//! PersistentVolumeClaim that KubeSpawner made and annotated with its user's name. The
//! appliance never deletes one by itself; an admin may purge the home of someone who is no
//! longer a member, naming it twice.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde::Serialize;

use super::USERNAME_ANNOTATION;
use crate::k8s::{Kube, KubeError};

/// One home volume.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Home {
    /// The claim's name (`claim-<user>`).
    pub claim: String,
    /// The user it belongs to (KubeSpawner's `hub.jupyter.org/username` annotation).
    pub user: String,
    /// The size asked for, and the size the volume has (they differ while it grows).
    pub requested: Option<String>,
    pub capacity: Option<String>,
    /// `Bound`, `Pending` or `Lost`.
    pub phase: Option<String>,
    pub created_at: Option<String>,
    /// Pods that mount it now (the user's notebook server).
    pub mounted_by: Vec<String>,
}

/// Every home volume in `namespace`, by claim name, without `mounted_by` (one request).
pub async fn claims(kube: &Kube, namespace: &str) -> Result<Vec<Home>, KubeError> {
    let api: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(kube.client().clone(), namespace);
    let claims = api.list(&Default::default()).await.map_err(|e| {
        KubeError::from_kube(e, "list", &format!("PersistentVolumeClaims in {namespace}"))
    })?;
    let mut homes: Vec<Home> = claims.items.into_iter().filter_map(home_of).collect();
    homes.sort_by(|a, b| a.claim.cmp(&b.claim));
    Ok(homes)
}

/// Every home volume in `namespace`, with the pods that mount each.
pub async fn list(kube: &Kube, namespace: &str) -> Result<Vec<Home>, KubeError> {
    let mut homes = claims(kube, namespace).await?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube.client().clone(), namespace);
    let pods = pods
        .list(&Default::default())
        .await
        .map_err(|e| KubeError::from_kube(e, "list", &format!("Pods in {namespace}")))?;
    for home in &mut homes {
        home.mounted_by = pods
            .items
            .iter()
            .filter(|pod| {
                pod.spec.as_ref().is_some_and(|spec| {
                    spec.volumes.iter().flatten().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.claim_name == home.claim)
                    })
                })
            })
            .filter_map(|pod| pod.metadata.name.clone())
            .collect();
    }
    Ok(homes)
}

/// A claim as a home, if KubeSpawner made it for a user.
fn home_of(claim: PersistentVolumeClaim) -> Option<Home> {
    let user = claim
        .metadata
        .annotations
        .as_ref()?
        .get(USERNAME_ANNOTATION)?
        .clone();
    let quantity = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.map(|q| q.0.clone())
    };
    Some(Home {
        requested: quantity(
            claim
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage")),
        ),
        capacity: quantity(
            claim
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage")),
        ),
        phase: claim.status.as_ref().and_then(|s| s.phase.clone()),
        created_at: claim
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        claim: claim.metadata.name.unwrap_or_default(),
        user,
        mounted_by: Vec::new(),
    })
}

/// Deletes one home volume's claim (its volume goes with it, by the StorageClass's reclaim
/// policy). The caller has checked that it may.
pub async fn purge(kube: &Kube, namespace: &str, claim: &str) -> Result<(), KubeError> {
    let claims: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(kube.client().clone(), namespace);
    claims
        .delete(claim, &Default::default())
        .await
        .map(drop)
        .map_err(|e| {
            KubeError::from_kube(
                e,
                "delete",
                &format!("PersistentVolumeClaim {namespace}/{claim}"),
            )
        })
}
