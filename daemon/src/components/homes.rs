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

/// Where the export pod mounts the home (read-only).
const EXPORT_MOUNT: &str = "/home-export";
/// The label that marks export pods, with the claim as its value.
const EXPORT_LABEL: &str = "pangeo.io/home-export";
/// How long the export pod may take to run: the image is on the node (the notebook image, which
/// every server runs), so this is seconds, and it fits inside the API's request deadline.
pub const EXPORT_START: std::time::Duration = std::time::Duration::from_secs(10);
/// An export pod ends itself after this long (pangeod deletes it when the export ends, and
/// the next export deletes those of a pangeod that was killed meanwhile).
const EXPORT_DEADLINE_SECONDS: i64 = 6 * 3600;

/// Why a home could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(
        "the export pod {pod} did not start within {}s: {reason}; the export runs the notebook image ({image}) with the home mounted read-only, so check that image is on the node (pangeoctl status, kubectl -n {namespace} describe pod {pod})",
        EXPORT_START.as_secs()
    )]
    NotStarted {
        pod: String,
        namespace: String,
        image: String,
        reason: String,
    },
    #[error("cannot run tar in the export pod {pod}: {message}")]
    Exec { pod: String, message: String },
}

/// The pod an export runs in. Dropping it deletes the pod, whatever ended the export (done,
/// failed, the client went away, the request's deadline).
pub struct ExportPod {
    api: kube::Api<Pod>,
    name: String,
}

impl ExportPod {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ExportPod {
    fn drop(&mut self) {
        let api = self.api.clone();
        let name = std::mem::take(&mut self.name);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _forget = Forget(name.clone());
            let now = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            match api.delete(&name, &now).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => tracing::warn!(pod = %name, %error, "cannot delete the home export pod; it ends itself after 6 hours"),
            }
        });
    }
}

/// Takes a pod off the live list once its delete has been sent (or failed).
struct Forget(String);

impl Drop for Forget {
    fn drop(&mut self) {
        live_exports().remove(&self.0);
    }
}

/// A running export: tar's output (an uncompressed tar of the home) and its end.
pub struct Export {
    pub pod: ExportPod,
    pub process: kube::api::AttachedProcess,
}

/// Starts an export of `home`: a pod beside the user's server that mounts the claim read-only
/// (a ReadWriteOnce volume may be mounted by several pods of its node, so the server keeps
/// running), then `tar` in it, whose output the caller streams.
pub async fn start_export(
    kube: &Kube,
    namespace: &str,
    home: &Home,
    image: &str,
) -> Result<Export, ExportError> {
    let api: kube::Api<Pod> = kube::Api::namespaced(kube.client().clone(), namespace);
    remove_leftover_exports(&api, namespace).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "home-export-",
            "labels": {
                super::MANAGED_BY.0: super::MANAGED_BY.1,
                EXPORT_LABEL: home.claim,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": EXPORT_DEADLINE_SECONDS,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "export",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", EXPORT_DEADLINE_SECONDS.to_string()],
                // Root that can read every file and change nothing: the mount is read-only.
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": false,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"], "add": ["DAC_READ_SEARCH"] },
                },
                "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } },
                "volumeMounts": [{ "name": "home", "mountPath": EXPORT_MOUNT, "readOnly": true }],
            }],
            "volumes": [{
                "name": "home",
                "persistentVolumeClaim": { "claimName": home.claim, "readOnly": true },
            }],
        },
    }))
    .map_err(|e| KubeError::BadObject {
        resource: format!("the export pod of {}", home.claim),
        message: e.to_string(),
    })?;
    let created = api.create(&Default::default(), &pod).await.map_err(|e| {
        KubeError::from_kube(e, "create", &format!("the export pod in {namespace}"))
    })?;
    let pod = ExportPod {
        api: api.clone(),
        name: created.metadata.name.unwrap_or_default(),
    };
    live_exports().insert(pod.name.clone());
    wait_running(&api, &pod.name, namespace, image).await?;
    let params = kube::api::AttachParams::default()
        .container("export")
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let process = api
        .exec(
            &pod.name,
            [
                "tar",
                "--numeric-owner",
                "--one-file-system",
                "-C",
                EXPORT_MOUNT,
                "-cf",
                "-",
                ".",
            ],
            &params,
        )
        .await
        .map_err(|e| ExportError::Exec {
            pod: pod.name.clone(),
            message: e.to_string(),
        })?;
    Ok(Export { pod, process })
}

/// Waits for the export pod to run, failing at once on what will not pass by itself (an image
/// that is not on the node), and naming what was seen last when the time is up.
async fn wait_running(
    api: &kube::Api<Pod>,
    name: &str,
    namespace: &str,
    image: &str,
) -> Result<(), ExportError> {
    let not_started = |reason: String| ExportError::NotStarted {
        pod: name.to_string(),
        namespace: namespace.to_string(),
        image: image.to_string(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + EXPORT_START;
    let mut seen = "not scheduled yet".to_string();
    loop {
        let pod = api
            .get(name)
            .await
            .map_err(|e| KubeError::from_kube(e, "get", &format!("Pod {namespace}/{name}")))?;
        let status = pod.status.unwrap_or_default();
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.clone());
        let running = status
            .container_statuses
            .iter()
            .flatten()
            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
        if running {
            return Ok(());
        }
        if let Some(waiting) = waiting {
            let reason = waiting.reason.unwrap_or_default();
            seen = format!(
                "{reason}{}",
                waiting
                    .message
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            if matches!(
                reason.as_str(),
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                return Err(not_started(seen));
            }
        } else if let Some(condition) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            seen = format!(
                "not scheduled: {}",
                condition.message.clone().unwrap_or_default()
            );
        } else if let Some(phase) = status.phase {
            seen = format!("phase {phase}");
        }
        if matches!(seen.as_str(), "phase Failed" | "phase Succeeded") {
            return Err(not_started(seen));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(not_started(seen));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The export pods this pangeod process runs now. Any other export pod is a leftover of a
/// pangeod that was stopped or killed during an export.
static LIVE_EXPORTS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn live_exports() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<String>> {
    LIVE_EXPORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Deletes the export pods of earlier pangeod processes (one killed during an export leaves
/// its pod). Best effort: a failure here does not stop an export.
async fn remove_leftover_exports(api: &kube::Api<Pod>, namespace: &str) {
    let params = kube::api::ListParams::default().labels(EXPORT_LABEL);
    let Ok(pods) = api.list(&params).await else {
        return;
    };
    for pod in pods.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_none() && !live_exports().contains(&name) {
            tracing::info!(pod = %name, %namespace, "removing a home export pod left by an earlier pangeod");
            let _ = api.delete(&name, &Default::default()).await;
        }
    }
}

/// tar's exit code from the exec's final status: 0 done, 1 files changed while they were read
/// (a live home; the archive is whole), 2 and up a failure.
pub fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Option<i32> {
    let status = status?;
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok())
}
