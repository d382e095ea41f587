//! The Kubernetes layer: a client from k3s's kubeconfig, server-side apply under one field
//! manager, waits by watch (never by sleep-polling an object), and API errors that name the
//! resource.

pub mod count;
mod error;
mod helmchart;

pub use error::KubeError;
pub use helmchart::{
    FailurePolicy, HelmChart, HelmChartCondition, HelmChartConfig, HelmChartConfigSpec,
    HelmChartSpec, HelmChartStatus,
};

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, wait::Condition};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The one field manager of everything pangeod applies.
pub const FIELD_MANAGER: &str = "pangeod";
/// A single request that takes longer than this counts as an outage.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One object of the desired state, of any kind: the unit `apply_all` works on.
#[derive(Debug, Clone)]
pub struct Desired {
    resource: ApiResource,
    object: DynamicObject,
}

impl Desired {
    /// From a typed k8s-openapi object or a derived custom resource.
    pub fn from_typed<K>(object: &K) -> Result<Self, KubeError>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let bad = |message: String| KubeError::BadObject {
            resource: describe(&resource.kind, object.meta()),
            message,
        };
        if object.meta().name.as_deref().is_none_or(str::is_empty) {
            return Err(bad("metadata.name is not set".into()));
        }
        let value = serde_json::to_value(object).map_err(|e| bad(e.to_string()))?;
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        Ok(Self { resource, object })
    }

    /// The object as it is sent.
    pub fn object(&self) -> &DynamicObject {
        &self.object
    }

    /// `Kind namespace/name`, as every message names it.
    pub fn describe(&self) -> String {
        describe(&self.resource.kind, &self.object.metadata)
    }
}

/// `Kind namespace/name` or `Kind name`.
pub fn describe(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    match meta.namespace.as_deref() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// What one `apply_all` did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Each object as the API server stored it, in order.
    pub stored: Vec<DynamicObject>,
    /// Requests that failed transiently and were retried.
    pub retries: usize,
}

/// A node's readiness and conditions, for `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeSummary {
    pub name: String,
    pub ready: bool,
    pub conditions: Vec<NodeCondition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl NodeSummary {
    pub fn from_node(node: &Node) -> Self {
        let conditions: Vec<NodeCondition> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| NodeCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
            })
            .collect();
        Self {
            name: node.name_any(),
            ready: node_is_ready(Some(node)),
            conditions,
        }
    }
}

/// The `Ready` condition of a node is `True`.
pub fn node_is_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[derive(Clone)]
pub struct Kube {
    client: Client,
}

impl Kube {
    /// A client from a kubeconfig file, as k3s writes to `/etc/rancher/k3s/k3s.yaml`.
    pub async fn from_kubeconfig(path: &Path) -> Result<Self, KubeError> {
        let fail = |message: String| KubeError::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(5));
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| fail(e.to_string()))?
            .with_layer(&count::CountLayer)
            .build();
        Ok(Self { client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `GET /readyz`: `Ok` when the API server answers `ok`.
    pub async fn readyz(&self) -> Result<(), KubeError> {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| KubeError::BadObject {
                resource: "/readyz".into(),
                message: e.to_string(),
            })?;
        let text = timed("get", "/readyz", self.client.request_text(request)).await?;
        if text.trim() == "ok" {
            Ok(())
        } else {
            Err(KubeError::Unavailable {
                verb: "get",
                resource: "/readyz".into(),
                message: format!("answered {:?}", text.trim()),
            })
        }
    }

    /// The API server's version, e.g. `v1.36.5+k3s1`.
    pub async fn server_version(&self) -> Result<String, KubeError> {
        let info = timed("get", "/version", self.client.apiserver_version()).await?;
        Ok(info.git_version)
    }

    /// Server-side apply of one object under [`FIELD_MANAGER`], forcing ownership: pangeod's
    /// config is the source of truth for every field it sets, and a field it stops setting is
    /// removed. Returns the object as stored.
    pub async fn apply<K>(&self, object: &K) -> Result<K, KubeError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let desired = Desired::from_typed(object)?;
        let stored = self.apply_desired(&desired).await?;
        let value = serde_json::to_value(&stored).map_err(|e| KubeError::BadObject {
            resource: desired.describe(),
            message: e.to_string(),
        })?;
        serde_json::from_value(value).map_err(|e| KubeError::BadObject {
            resource: desired.describe(),
            message: format!("the stored object does not decode: {e}"),
        })
    }

    /// A bound token of a ServiceAccount (the TokenRequest API), valid for `seconds` (the API
    /// server may shorten it). Returns the token and its expiry (RFC 3339).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> Result<(String, String), KubeError> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: None,
                expiration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resource = format!("ServiceAccount {namespace}/{name} (token)");
        let issued = timed(
            "create",
            &resource,
            api.create_token_request(name, &PostParams::default(), &request),
        )
        .await?;
        let status = issued.status.ok_or_else(|| KubeError::BadObject {
            resource: resource.clone(),
            message: "the TokenRequest came back without a status".into(),
        })?;
        let token = status.token.ok_or_else(|| KubeError::BadObject {
            resource: resource.clone(),
            message: "the TokenRequest came back without a token".into(),
        })?;
        let expires = status
            .expiration_timestamp
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        Ok((token, expires))
    }

    /// One apply request.
    pub async fn apply_desired(&self, desired: &Desired) -> Result<DynamicObject, KubeError> {
        let name = desired.object.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match desired.object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &desired.resource),
            None => Api::all_with(self.client.clone(), &desired.resource),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        timed(
            "apply",
            &desired.describe(),
            api.patch(&name, &params, &Patch::Apply(&desired.object)),
        )
        .await
    }

    /// Applies every object in order. A transient failure (an API server that restarts, a
    /// timeout, a conflict) is retried with backoff until `deadline` passes; any other error
    /// stops at once and names the object. Applying is idempotent, so a retry after a request
    /// whose answer was lost is safe.
    pub async fn apply_all(
        &self,
        objects: &[Desired],
        deadline: Duration,
    ) -> Result<ApplyReport, KubeError> {
        let until = tokio::time::Instant::now() + deadline;
        let mut report = ApplyReport::default();
        for desired in objects {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.apply_desired(desired).await {
                    Ok(stored) => {
                        report.stored.push(stored);
                        break;
                    }
                    Err(error) if error.is_transient() && tokio::time::Instant::now() < until => {
                        report.retries += 1;
                        tracing::warn!(%error, "apply failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(report)
    }

    /// Waits, by watch, until the object `name` satisfies `condition`, or `timeout` passes.
    /// The watch survives API server restarts: it re-lists and resumes with backoff.
    pub async fn wait_for<K>(
        &self,
        api: Api<K>,
        name: &str,
        what: &str,
        timeout: Duration,
        condition: impl Condition<K>,
    ) -> Result<Option<K>, KubeError>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let fields = format!("metadata.name={name}");
        let stream =
            watcher::watcher(api, watcher::Config::default().fields(&fields)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut seen: Option<K> = None;
        let wait = async {
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        if condition.matches_object(Some(&obj)) {
                            return Some(obj);
                        }
                        seen = Some(obj);
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        seen = None;
                        if condition.matches_object(None) {
                            return None;
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if seen.is_none() && condition.matches_object(None) {
                            return None;
                        }
                    }
                    Ok(watcher::Event::Init) => seen = None,
                    Err(error) => {
                        tracing::debug!(%error, what, "watch interrupted; resuming");
                    }
                }
            }
            None
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| KubeError::Timeout {
                verb: "wait for",
                resource: what.to_string(),
                after: timeout,
            })
    }
}

/// Runs one request with [`REQUEST_TIMEOUT`] and maps its error.
async fn timed<T>(
    verb: &'static str,
    resource: &str,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| KubeError::from_kube(e, verb, resource)),
        Err(_) => Err(KubeError::Timeout {
            verb,
            resource: resource.to_string(),
            after: REQUEST_TIMEOUT,
        }),
    }
}
