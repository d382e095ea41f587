//! The platform's workloads, the node and its pods as pangeod last saw them: one reflector per
//! kind (a list, then a watch that resumes with backoff after the API server restarts), so
//! that `/v1/status` computes rollouts and notebook capacity from memory and makes no request
//! of the Kubernetes API (`pangeod_kubernetes_requests_total` counts them by caller).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use super::capacity::Capacity;
use super::rollout::Rollout;
use crate::config::Config;
use crate::k8s::Kube;

/// One kind's store, and whether its first list is in.
struct Reflected<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    listed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Reflected<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn start(api: kube::Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let listed = Arc::new(AtomicBool::new(false));
        let flag = listed.clone();
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default()).default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Release),
                    Ok(_) => {}
                    // The watcher retries with its backoff; the store keeps the last objects.
                    Err(error) => tracing::debug!(%error, "a status reflector's watch failed"),
                }
            }
        });
        Self {
            store,
            listed,
            task,
        }
    }

    /// The objects, once the first list is in.
    fn objects(&self) -> Option<Vec<Arc<K>>> {
        self.listed
            .load(Ordering::Acquire)
            .then(|| self.store.state())
    }
}

impl<K: kube::Resource + 'static> Drop for Reflected<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reflectors behind status.
pub struct ClusterCache {
    deployments: Reflected<Deployment>,
    stateful_sets: Reflected<StatefulSet>,
    daemon_sets: Reflected<DaemonSet>,
    nodes: Reflected<Node>,
    pods: Reflected<Pod>,
}

impl ClusterCache {
    /// Starts the reflectors on `kube`: the workloads of the platform's namespace, the nodes,
    /// and every pod (on the appliance's one node, the pods are the node's).
    pub fn start(kube: &Kube) -> Self {
        let client = kube.client().clone();
        let namespace = super::NAMESPACE;
        Self {
            deployments: Reflected::start(kube::Api::namespaced(client.clone(), namespace)),
            stateful_sets: Reflected::start(kube::Api::namespaced(client.clone(), namespace)),
            daemon_sets: Reflected::start(kube::Api::namespaced(client.clone(), namespace)),
            nodes: Reflected::start(kube::Api::all(client.clone())),
            pods: Reflected::start(kube::Api::all(client)),
        }
    }

    /// Each release's rollout, once the workloads are listed.
    pub fn rollouts(&self, releases: &[&str]) -> Option<Vec<(String, Rollout)>> {
        let deployments = self.deployments.objects()?;
        let stateful_sets = self.stateful_sets.objects()?;
        let daemon_sets = self.daemon_sets.objects()?;
        Some(super::rollout::rollouts(
            &deployments,
            &stateful_sets,
            &daemon_sets,
            releases,
        ))
    }

    /// How many more notebook servers fit on the node.
    pub fn capacity(&self, config: &Config) -> Result<Capacity, String> {
        let node_name = crate::k3s::node_name(config);
        let (Some(nodes), Some(pods)) = (self.nodes.objects(), self.pods.objects()) else {
            return Err("the node and its pods are not listed yet".into());
        };
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .ok_or_else(|| {
                format!("node {node_name} is not registered with the API server (yet)")
            })?;
        Ok(super::capacity::capacity(node, &pods, config))
    }
}
