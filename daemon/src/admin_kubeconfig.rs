//! A kubeconfig for the tenancy's admins: "access to the underlying Kubernetes cluster is
//! achieved in the same way as any other CaaS Kubernetes cluster". The identity is a dedicated
//! ServiceAccount bound to `cluster-admin` (not k3s's own admin credentials, which never leave
//! the VM); each kubeconfig carries a bound token of its own with an expiry, from the
//! TokenRequest API, so a lost one stops working by itself. The server is the external IP,
//! which k3s's certificate names (`tls-san`); the CA is the cluster's, from the kubeconfig
//! pangeod itself uses.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::k8s::{Kube, KubeError};

/// The admin identity.
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE_ACCOUNT: &str = "pangeo-cluster-admin";
/// The API server's port on the VM.
pub const API_PORT: u16 = 6443;
/// Token lifetimes, in hours: the default, and the most a caller may ask for.
pub const DEFAULT_HOURS: u32 = 24;
pub const MAX_HOURS: u32 = 24 * 7;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(
        "cannot read the cluster's CA from {path}: {message}; check k3s.kubeconfig (k3s writes it when it starts)"
    )]
    Ca { path: String, message: String },
    #[error("cannot write the kubeconfig: {0}")]
    Encode(String),
}

/// The kubeconfig handed out, and when its token expires.
#[derive(Debug, Clone)]
pub struct Issued {
    pub yaml: String,
    pub server: String,
    pub expires_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct KubeconfigFile {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    current_context: String,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    entry: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterDetails,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterDetails {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserDetails,
}

#[derive(Serialize)]
struct UserDetails {
    token: String,
}

#[derive(Serialize)]
struct ContextEntry {
    context: ContextDetails,
}

#[derive(Serialize)]
struct ContextDetails {
    cluster: String,
    user: String,
}

/// The ServiceAccount and its binding to `cluster-admin`, as applied.
pub fn identity() -> (
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "pangeod".to_string(),
        )]
        .into(),
    );
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SERVICE_ACCOUNT.into()),
            namespace: Some(NAMESPACE.into()),
            labels: labels.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(SERVICE_ACCOUNT.into()),
            labels,
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    };
    (account, binding)
}

/// The cluster's CA (base64 PEM), from the kubeconfig pangeod uses.
pub fn cluster_ca(kubeconfig: &Path) -> Result<String, KubeconfigError> {
    let fail = |message: String| KubeconfigError::Ca {
        path: kubeconfig.display().to_string(),
        message,
    };
    let config =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| fail(e.to_string()))?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| fail("it names no cluster".into()))?;
    if let Some(data) = cluster.certificate_authority_data {
        return Ok(data);
    }
    let path = cluster
        .certificate_authority
        .ok_or_else(|| fail("its cluster has no certificate authority".into()))?;
    let pem = std::fs::read(&path).map_err(|e| fail(format!("{path}: {e}")))?;
    // k8s-openapi's ByteString serialises as base64, as the kubeconfig wants it.
    match serde_json::to_value(k8s_openapi::ByteString(pem)) {
        Ok(serde_json::Value::String(data)) => Ok(data),
        _ => Err(fail(format!("{path} cannot be encoded"))),
    }
}

/// Makes sure the identity exists, and issues a kubeconfig with a token valid for `hours`.
pub async fn issue(kube: &Kube, config: &Config, hours: u32) -> Result<Issued, KubeconfigError> {
    let ca = cluster_ca(&config.k3s.kubeconfig)?;
    let (account, binding) = identity();
    kube.apply(&account).await?;
    kube.apply(&binding).await?;
    let (token, expires_at) = kube
        .service_account_token(NAMESPACE, SERVICE_ACCOUNT, i64::from(hours) * 3600)
        .await?;
    let server = server_url(config);
    let name = config.cluster.name.to_lowercase();
    let file = KubeconfigFile {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: name.clone(),
            entry: ClusterEntry {
                cluster: ClusterDetails {
                    server: server.clone(),
                    certificate_authority_data: ca,
                },
            },
        }],
        users: vec![Named {
            name: SERVICE_ACCOUNT.into(),
            entry: UserEntry {
                user: UserDetails { token },
            },
        }],
        contexts: vec![Named {
            name: name.clone(),
            entry: ContextEntry {
                context: ContextDetails {
                    cluster: name.clone(),
                    user: SERVICE_ACCOUNT.into(),
                },
            },
        }],
        current_context: name,
    };
    let yaml =
        serde_yaml_ng::to_string(&file).map_err(|e| KubeconfigError::Encode(e.to_string()))?;
    Ok(Issued {
        yaml,
        server,
        expires_at,
    })
}

/// The API server as the admins reach it: the external IP, which k3s's certificate names.
pub fn server_url(config: &Config) -> String {
    match config.cluster.external_ip {
        std::net::IpAddr::V4(ip) => format!("https://{ip}:{API_PORT}"),
        std::net::IpAddr::V6(ip) => format!("https://[{ip}]:{API_PORT}"),
    }
}
