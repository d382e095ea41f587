//! Kubernetes API errors mapped to what an operator can act on. Every variant names the resource
//! (`Kind namespace/name`) and the verb, so a log line or `/v1/status` says what failed where.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot use the kubeconfig {path}: {message}; k3s writes it when it starts (write-kubeconfig-mode 0600), so check that k3s is running and that pangeod runs as root"
    )]
    Kubeconfig { path: PathBuf, message: String },

    #[error("{verb} {resource}: not found ({message})")]
    NotFound {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error(
        "{verb} {resource}: forbidden for this identity ({message}); pangeod needs k3s's admin kubeconfig, or RBAC that grants the verb on this resource"
    )]
    Forbidden {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error(
        "{verb} {resource}: the credentials are not accepted ({message}); the kubeconfig belongs to another cluster or its certificate expired: restart k3s to rewrite it"
    )]
    Unauthorized {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error(
        "{verb} {resource}: conflict ({message}); another client changed it or owns the field, and pangeod retries with the current state"
    )]
    Conflict {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error("{verb} {resource}: rejected by the API server as invalid ({message})")]
    Invalid {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error(
        "{verb} {resource}: the Kubernetes API is unavailable ({message}); pangeod retries until it is back"
    )]
    Unavailable {
        verb: &'static str,
        resource: String,
        message: String,
    },

    #[error(
        "{verb} {resource}: no answer within {}s; the API server is overloaded or hung, and pangeod retries",
        after.as_secs()
    )]
    Timeout {
        verb: &'static str,
        resource: String,
        after: Duration,
    },

    #[error("{verb} {resource}: the API server answered {code} ({message})")]
    Other {
        verb: &'static str,
        resource: String,
        code: u16,
        message: String,
    },

    #[error("{resource} cannot be applied: {message}")]
    BadObject { resource: String, message: String },
}

impl KubeError {
    /// Whether waiting and retrying may fix it (an API server that restarts, a lost race).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KubeError::Unavailable { .. } | KubeError::Timeout { .. } | KubeError::Conflict { .. }
        )
    }

    /// Maps a client error for `verb` on `resource`.
    pub fn from_kube(error: kube::Error, verb: &'static str, resource: &str) -> Self {
        let resource = resource.to_string();
        match error {
            kube::Error::Api(status) => {
                let message = if status.message.is_empty() {
                    status.reason.clone()
                } else {
                    status.message.clone()
                };
                match status.code {
                    404 => KubeError::NotFound {
                        verb,
                        resource,
                        message,
                    },
                    403 => KubeError::Forbidden {
                        verb,
                        resource,
                        message,
                    },
                    401 => KubeError::Unauthorized {
                        verb,
                        resource,
                        message,
                    },
                    409 => KubeError::Conflict {
                        verb,
                        resource,
                        message,
                    },
                    400 | 422 => KubeError::Invalid {
                        verb,
                        resource,
                        message,
                    },
                    429 | 500 | 502 | 503 | 504 => KubeError::Unavailable {
                        verb,
                        resource,
                        message,
                    },
                    code => KubeError::Other {
                        verb,
                        resource,
                        code,
                        message,
                    },
                }
            }
            // Connection refused or reset, TLS handshake cut short: the server is down or
            // restarting.
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
                KubeError::Unavailable {
                    verb,
                    resource,
                    message: chain(&error),
                }
            }
            other => KubeError::Other {
                verb,
                resource,
                code: 0,
                message: chain(&other),
            },
        }
    }
}

/// The error and its sources on one line: hyper's top-level message alone is rarely useful.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn each_status_code_maps_to_its_kind_and_names_the_resource() {
        let cases = [
            (404, "NotFound", "not found"),
            (403, "Forbidden", "forbidden for this identity"),
            (401, "Unauthorized", "credentials are not accepted"),
            (409, "Conflict", "conflict"),
            (422, "Invalid", "invalid"),
            (503, "ServiceUnavailable", "unavailable"),
            (418, "Teapot", "answered 418"),
        ];
        for (code, reason, expect) in cases {
            let error = KubeError::from_kube(
                api_error(code, reason, "upstream says no"),
                "apply",
                "HelmChart pangeo/jupyterhub",
            );
            let text = error.to_string();
            assert!(
                text.starts_with("apply HelmChart pangeo/jupyterhub: "),
                "{text}"
            );
            assert!(text.contains(expect), "{code}: {text}");
            assert!(text.contains("upstream says no"), "{text}");
        }
    }

    #[test]
    fn only_outages_and_races_are_transient() {
        let transient =
            |code| KubeError::from_kube(api_error(code, "", "m"), "get", "Node n").is_transient();
        assert!(transient(503));
        assert!(transient(409));
        assert!(!transient(403));
        assert!(!transient(404));
        assert!(!transient(422));
    }
}
