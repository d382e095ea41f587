//! The platform's components as Kubernetes objects: JupyterHub and Dask Gateway as k3s
//! `HelmChart`s, the storage provisioner's chart and the homes' StorageClass, and the
//! generated secrets. [`plan`] is pure: config, secrets and directory material in, the
//! desired objects out, every chart's values validated against its upstream schema (so a
//! chart that fails makes no plan, and nothing is applied). [`apply`] does the I/O.

pub mod cache;
pub mod capacity;
mod drift;
pub mod homes;
pub mod ingress;
pub mod rollout;
pub mod schema;
pub mod status;
pub mod values;

pub use schema::SchemaError;
pub use status::{ComponentStatus, Tracker};
pub use values::{DirectoryMaterial, Secrets};

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::k8s::{Desired, FailurePolicy, HelmChart, HelmChartSpec, Kube, KubeError};
use crate::state::{State, StateError};

/// Where the components live; the HelmCharts too (helm-controller runs their jobs there).
pub const NAMESPACE: &str = crate::k3s::NAMESPACE;
pub const HUB_RELEASE: &str = "jupyterhub";
pub const GATEWAY_RELEASE: &str = "dask-gateway";
pub const STORAGE_RELEASE: &str = "lvm-localpv";
pub const STORAGE_CHART_VERSION: &str = "1.7.0";
/// Every chart [`render`] makes, in apply order.
pub const RELEASES: [&str; 3] = [STORAGE_RELEASE, HUB_RELEASE, GATEWAY_RELEASE];
/// Each chart [`render`] makes and its version, in apply order.
pub const CHARTS: [(&str, &str); 3] = [
    (STORAGE_RELEASE, STORAGE_CHART_VERSION),
    (HUB_RELEASE, schema::JUPYTERHUB_VERSION),
    (GATEWAY_RELEASE, schema::DASK_GATEWAY_VERSION),
];
/// The homes' StorageClass: sized, expandable volumes (OpenEBS LVM LocalPV).
pub const STORAGE_CLASS: &str = "pangeo-homes";
/// The LVM volume group on the data disk that the StorageClass provisions from.
/// The default of `storage.volume_group`.
pub const VOLUME_GROUP: &str = crate::config::defaults::VOLUME_GROUP;
/// k3s serves the archives in `<data-dir>/server/static/charts/` here: no network at install.
pub const CHARTS_URL: &str = "https://%{KUBERNETES_API}%/static/charts";
/// The Secret that keeps the generated secrets in Kubernetes too.
pub const SECRETS_NAME: &str = "pangeo-secrets";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "pangeod");

#[derive(Debug, thiserror::Error)]
pub enum ComponentsError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot load a chart schema built into pangeod: {0}")]
    SchemaLoad(String),
    #[error("cannot encode the {chart} values: {message}")]
    Encode {
        chart: &'static str,
        message: String,
    },
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read {key} ({path}): {source}")]
    Read {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl ComponentsError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ComponentsError::Kube(e) if e.is_transient() => Some(Duration::from_secs(5)),
            ComponentsError::Kube(_) | ComponentsError::State(_) | ComponentsError::Read { .. } => {
                Some(Duration::from_secs(60))
            }
            // A rendering bug: a new pangeod or config fixes it, waiting does not.
            ComponentsError::Schema(_)
            | ComponentsError::SchemaLoad(_)
            | ComponentsError::Encode { .. } => None,
        }
    }
}

/// One chart, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChart {
    /// The HelmChart's name, which helm-controller uses as the release name.
    pub name: &'static str,
    pub version: &'static str,
    pub values: Value,
    /// Validated against the chart's upstream schema (the storage chart has none here).
    pub schema: Option<UpstreamSchema>,
}

/// The upstream schemas pangeod carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSchema {
    Jupyterhub,
    DaskGateway,
}

impl UpstreamSchema {
    pub fn load(self) -> Result<&'static schema::ChartSchema, String> {
        match self {
            UpstreamSchema::Jupyterhub => schema::jupyterhub(),
            UpstreamSchema::DaskGateway => schema::dask_gateway(),
        }
    }
}

impl RenderedChart {
    /// The archive's file name in k3s's static charts directory.
    pub fn archive(&self) -> String {
        format!("{}-{}.tgz", self.name, self.version)
    }
}

/// The charts' values and the settings the other objects come from, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub namespace: String,
    pub charts: Vec<RenderedChart>,
    pub secrets: Secrets,
    pub tls_mode: ingress::TlsMode,
    /// The LVM volume group the homes' StorageClass provisions from (`storage.volume_group`).
    pub volume_group: String,
    /// The domain's certificate in local-CA mode, applied as the ingress's TLS Secret (made
    /// once by the components step, which keeps it in the state database).
    pub local_tls: Option<ingress::LocalTls>,
}

/// Pure: the charts' values for `config`, not yet validated (see [`plan`]).
pub fn render(config: &Config, secrets: &Secrets, directory: &DirectoryMaterial) -> Rendered {
    let chart = |name, version: &'static str, values, schema| RenderedChart {
        name,
        version,
        values,
        schema,
    };
    Rendered {
        namespace: NAMESPACE.into(),
        charts: vec![
            chart(
                STORAGE_RELEASE,
                STORAGE_CHART_VERSION,
                serde_json::json!({
                    "lvmPlugin": { "allowedTopologies": "kubernetes.io/hostname," },
                    "analytics": { "enabled": false },
                }),
                None,
            ),
            chart(
                HUB_RELEASE,
                schema::JUPYTERHUB_VERSION,
                values::jupyterhub(config, secrets, directory),
                Some(UpstreamSchema::Jupyterhub),
            ),
            chart(
                GATEWAY_RELEASE,
                schema::DASK_GATEWAY_VERSION,
                values::dask_gateway(config, secrets),
                Some(UpstreamSchema::DaskGateway),
            ),
        ],
        secrets: secrets.clone(),
        tls_mode: ingress::tls_mode(config),
        volume_group: config.storage.volume_group.clone(),
        local_tls: None,
    }
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_string(),
            MANAGED_BY.1.to_string(),
        )])),
        ..Default::default()
    }
}

impl Rendered {
    /// Every chart's values against its schema; the first failure is the error.
    pub fn validate(&self) -> Result<(), ComponentsError> {
        for chart in &self.charts {
            if let Some(schema) = chart.schema {
                schema
                    .load()
                    .map_err(ComponentsError::SchemaLoad)?
                    .validate(&chart.values)?;
            }
        }
        Ok(())
    }

    /// The HelmChart for one rendered chart.
    pub fn helm_chart(&self, chart: &RenderedChart) -> Result<HelmChart, ComponentsError> {
        let values =
            serde_json::to_string_pretty(&chart.values).map_err(|e| ComponentsError::Encode {
                chart: chart.name,
                message: e.to_string(),
            })?;
        let mut object = HelmChart::new(
            chart.name,
            HelmChartSpec {
                chart: Some(format!("{CHARTS_URL}/{}", chart.archive())),
                target_namespace: Some(self.namespace.clone()),
                // JSON is YAML: deterministic, and no YAML quoting surprises.
                values_content: Some(values),
                // Never `reinstall` (it uninstalls, and the hub database volume goes with it)
                // and never `abort` (an interrupted release would stay stuck for good).
                failure_policy: Some(FailurePolicy::Retry),
                timeout: Some("15m0s".into()),
                ..Default::default()
            },
        );
        object.metadata = meta(Some(&self.namespace), chart.name);
        Ok(object)
    }

    /// Everything, in apply order.
    pub fn objects(&self) -> Result<Vec<Desired>, ComponentsError> {
        let mut objects = vec![Desired::from_typed(&Namespace {
            metadata: meta(None, &self.namespace),
            ..Default::default()
        })?];
        let secrets = self
            .secrets
            .entries()
            .iter()
            .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
            .collect();
        objects.push(Desired::from_typed(&Secret {
            metadata: meta(Some(&self.namespace), SECRETS_NAME),
            string_data: Some(secrets),
            type_: Some("Opaque".into()),
            ..Default::default()
        })?);
        let mut class = StorageClass {
            metadata: meta(None, STORAGE_CLASS),
            provisioner: "local.csi.openebs.io".into(),
            allow_volume_expansion: Some(true),
            reclaim_policy: Some("Retain".into()),
            volume_binding_mode: Some("WaitForFirstConsumer".into()),
            parameters: Some(BTreeMap::from([
                ("storage".to_string(), "lvm".to_string()),
                ("volgroup".to_string(), self.volume_group.clone()),
                ("fsType".to_string(), "ext4".to_string()),
            ])),
            ..Default::default()
        };
        class.metadata.annotations = Some(BTreeMap::from([(
            "storageclass.kubernetes.io/is-default-class".to_string(),
            "true".to_string(),
        )]));
        objects.push(Desired::from_typed(&class)?);
        match (self.tls_mode, &self.local_tls) {
            (ingress::TlsMode::Acme, _) => {
                objects.push(Desired::from_typed(&ingress::traefik_config(
                    STORAGE_CLASS,
                ))?);
            }
            (ingress::TlsMode::LocalCa, Some(tls)) => {
                objects.push(Desired::from_typed(&Secret {
                    metadata: meta(Some(&self.namespace), ingress::TLS_SECRET),
                    string_data: Some(BTreeMap::from([
                        (
                            "tls.crt".to_string(),
                            format!("{}{}", tls.cert_pem, tls.ca_pem),
                        ),
                        ("tls.key".to_string(), tls.key_pem.clone()),
                        ("ca.crt".to_string(), tls.ca_pem.clone()),
                    ])),
                    type_: Some("kubernetes.io/tls".into()),
                    ..Default::default()
                })?);
            }
            (ingress::TlsMode::LocalCa, None) => {}
        }
        for chart in &self.charts {
            objects.push(Desired::from_typed(&self.helm_chart(chart)?)?);
        }
        Ok(objects)
    }
}

/// The desired state: the rendered charts, each valid against its upstream schema, and every
/// object in apply order. Only [`Plan::new`] makes one, so [`apply`] never sees a chart that
/// failed its schema.
#[derive(Debug, Clone)]
pub struct Plan {
    rendered: Rendered,
    objects: Vec<Desired>,
}

impl Plan {
    /// Validates every chart's values, then builds the objects. Pure.
    pub fn new(rendered: Rendered) -> Result<Self, ComponentsError> {
        rendered.validate()?;
        let objects = rendered.objects()?;
        Ok(Plan { rendered, objects })
    }

    pub fn rendered(&self) -> &Rendered {
        &self.rendered
    }

    /// Everything, in apply order.
    pub fn objects(&self) -> &[Desired] {
        &self.objects
    }
}

/// Pure: the desired objects for `config`, with the generated `secrets`, the directory's
/// material (its CA) and, in local-CA mode, the ingress's certificate, all read by the caller.
/// A chart whose values fail its upstream schema is the error (a pangeod bug).
pub fn plan(
    config: &Config,
    secrets: &Secrets,
    directory: &DirectoryMaterial,
    local_tls: Option<ingress::LocalTls>,
) -> Result<Plan, ComponentsError> {
    let mut rendered = render(config, secrets, directory);
    rendered.local_tls = local_tls;
    Plan::new(rendered)
}

/// The chart HelmCharts pangeod would apply for `config`, as a pretty JSON array (`pangeod
/// --print-helmcharts`, for rendering the real charts with `helm template` in the tests).
/// The generated secrets are not read: each is a fixed placeholder of the real length. The
/// values are validated against the charts' schemas first, as [`plan`] does.
pub fn print_helm_charts(config: &Config) -> Result<String, ComponentsError> {
    let placeholder = |c: char| c.to_string().repeat(64);
    let secrets = Secrets {
        proxy_token: placeholder('1'),
        cookie_secret: placeholder('2'),
        appliance_token: placeholder('3'),
        gateway_token: placeholder('4'),
    };
    let plan = plan(config, &secrets, &directory_material(config)?, None)?;
    let rendered = plan.rendered();
    let charts = rendered
        .charts
        .iter()
        .map(|chart| rendered.helm_chart(chart))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string_pretty(&charts).map_err(|e| ComponentsError::Encode {
        chart: "HelmCharts",
        message: e.to_string(),
    })
}

/// The generated secrets, made once (SQLite) and never regenerated.
pub fn secrets(state: &State) -> Result<Secrets, StateError> {
    Secrets::load(|name| state.secret(name))
}

/// The directory settings the hub needs (the CA), read from their files.
pub fn directory_material(config: &Config) -> Result<DirectoryMaterial, ComponentsError> {
    let read = |key, path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|source| ComponentsError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(DirectoryMaterial {
        ca_pem: match &config.freeipa.ca_file {
            Some(path) => Some(read("freeipa.ca_file", path)?),
            None => None,
        },
    })
}

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileReport {
    pub objects: usize,
    /// `name: generation` of each HelmChart after the apply.
    pub charts: BTreeMap<String, i64>,
}

/// Applies every object of `plan`, in order, once no chart is being uninstalled.
pub async fn apply(kube: &Kube, plan: &Plan) -> Result<ReconcileReport, ComponentsError> {
    let objects = plan.objects();
    // Never into the middle of an uninstall (a chart someone deleted): see drift.rs.
    drift::wait_for_deletions(kube, &plan.rendered.namespace).await;
    let report = kube.apply_all(objects, Duration::from_secs(120)).await?;
    let charts = report
        .stored
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "HelmChart"))
        .map(|o| {
            (
                o.metadata.name.clone().unwrap_or_default(),
                o.metadata.generation.unwrap_or(0),
            )
        })
        .collect();
    Ok(ReconcileReport {
        objects: objects.len(),
        charts,
    })
}

/// [`plan`]'s second half, then [`apply`]: nothing is applied when a chart fails its schema.
pub async fn reconcile(
    kube: &Kube,
    rendered: &Rendered,
) -> Result<ReconcileReport, ComponentsError> {
    apply(kube, &Plan::new(rendered.clone())?).await
}

/// The annotation KubeSpawner 7 puts on a user's PVC (its names are slugs).
pub const USERNAME_ANNOTATION: &str = "hub.jupyter.org/username";

/// One home volume grown to the configured size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expanded {
    pub user: String,
    pub claim: String,
    pub from: String,
    pub to: String,
}

/// Bytes of a Kubernetes quantity such as `10Gi`, `500M` or `1073741824`.
pub fn quantity_bytes(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u128 = number.parse().ok()?;
    let factor: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Grows every user's home volume (found by [`USERNAME_ANNOTATION`]) that is smaller than
/// `storage_gb` GiB. Volumes are never shrunk: a larger one is left as it is (a config shrink
/// is refused before it gets here). The StorageClass allows expansion; the provisioner grows
/// the volume and the file system.
pub async fn expand_homes(
    kube: &Kube,
    namespace: &str,
    storage_gb: u32,
) -> Result<Vec<Expanded>, ComponentsError> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let target = format!("{storage_gb}Gi");
    let target_bytes = u128::from(storage_gb) << 30;
    let api: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(kube.client().clone(), namespace);
    let mut expanded = Vec::new();
    for home in homes::claims(kube, namespace).await? {
        let (user, name) = (home.user, home.claim);
        let current = home.requested.unwrap_or_default();
        if quantity_bytes(&current).is_some_and(|b| b >= target_bytes) {
            continue;
        }
        let patch =
            serde_json::json!({ "spec": { "resources": { "requests": { "storage": target } } } });
        api.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            KubeError::from_kube(
                e,
                "expand",
                &format!("PersistentVolumeClaim {namespace}/{name} (user {user})"),
            )
        })?;
        tracing::info!(%user, claim = %name, from = %current, to = %target, "home volume expanded");
        expanded.push(Expanded {
            user,
            claim: name,
            from: current,
            to: target.clone(),
        });
    }
    Ok(expanded)
}

#[cfg(test)]
mod tests;
