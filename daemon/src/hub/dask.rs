//! A user's Dask clusters, as the gateway's Kubernetes backend records them: one `DaskCluster`
//! (`gateway.dask.org/v1alpha1`) per cluster, with the owner in `spec.username` and the phase
//! in `status.phase`. Deleting the object is how the gateway itself stops a cluster: its
//! controller then removes the scheduler and the workers.

use std::collections::HashMap;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde::Serialize;
use serde_json::Value;

use crate::k8s::{Kube, KubeError};

/// One of a user's Dask clusters.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DaskClusterView {
    /// The gateway's name for it: `<namespace>.<object name>`.
    pub name: String,
    /// `Pending`, `Running`, `Stopping`, `Stopped` or `Failed`.
    pub phase: String,
    /// The options the user chose (worker cores and memory).
    #[schema(value_type = Object)]
    pub options: Value,
    pub created_at: Option<String>,
}

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.dask.org", "v1alpha1", "DaskCluster"),
        "daskclusters",
    )
}

/// Every `DaskCluster` in `namespace`, with the API handle to act on them.
async fn list(
    kube: &Kube,
    namespace: &str,
) -> Result<(kube::Api<DynamicObject>, Vec<DynamicObject>), KubeError> {
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(kube.client().clone(), namespace, &resource());
    let list = api.list(&ListParams::default()).await.map_err(|error| {
        KubeError::from_kube(error, "list", &format!("DaskCluster {namespace}/*"))
    })?;
    Ok((api, list.items))
}

/// The clusters owned by `user` (the hub user name), oldest first.
pub async fn clusters_of(
    kube: &Kube,
    namespace: &str,
    user: &str,
) -> Result<Vec<DaskClusterView>, KubeError> {
    let (_, items) = list(kube, namespace).await?;
    let mut clusters: Vec<DaskClusterView> = items
        .into_iter()
        .filter(|object| {
            object.data["spec"]["username"]
                .as_str()
                .is_some_and(|owner| owner.eq_ignore_ascii_case(user))
        })
        .map(|object| DaskClusterView {
            name: format!(
                "{}.{}",
                object.metadata.namespace.as_deref().unwrap_or(namespace),
                object.metadata.name.as_deref().unwrap_or_default()
            ),
            phase: object.data["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string(),
            options: object.data["spec"]["options"].clone(),
            created_at: object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
        })
        .collect();
    clusters.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    Ok(clusters)
}

/// A cluster deleted because its owner may no longer use the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedCluster {
    pub user: String,
    /// `<namespace>.<object name>`, as the gateway names it.
    pub cluster: String,
    /// Why the owner may not: their state in the user table (`removed` or `disabled`).
    pub because: String,
}

/// Deletes every cluster whose owner (compared in lower case) is in `revoked`, which maps the
/// hub user name to the reason. Revoking a user's hub tokens only stops them making new
/// clusters; this stops the ones that run. A cluster already being deleted is left to finish.
pub async fn stop_clusters_of(
    kube: &Kube,
    namespace: &str,
    revoked: &HashMap<String, String>,
) -> Result<Vec<StoppedCluster>, KubeError> {
    if revoked.is_empty() {
        return Ok(Vec::new());
    }
    let (api, items) = list(kube, namespace).await?;
    let mut stopped = Vec::new();
    for object in items {
        let Some(owner) = object.data["spec"]["username"].as_str() else {
            continue;
        };
        let Some(because) = revoked.get(&owner.to_lowercase()) else {
            continue;
        };
        let Some(name) = object.metadata.name.as_deref() else {
            continue;
        };
        if object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => {
                return Err(KubeError::from_kube(
                    error,
                    "delete",
                    &format!("DaskCluster {namespace}/{name}"),
                ));
            }
        }
        stopped.push(StoppedCluster {
            user: owner.to_lowercase(),
            cluster: format!("{namespace}.{name}"),
            because: because.clone(),
        });
    }
    Ok(stopped)
}
