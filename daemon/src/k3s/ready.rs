//! When is k3s ready? All of: the kubeconfig exists, `/readyz` answers `ok`, and the node is
//! `Ready`. The first two are polled briefly (there is nothing to watch before the API server
//! serves); the node is waited for by watch.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::supervisor::{Supervisor, SupervisorError};
use crate::k8s::{Kube, KubeError, NodeSummary, node_is_ready};

const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("{source}")]
    Supervisor {
        #[from]
        source: SupervisorError,
    },
    #[error(
        "k3s was not ready within {}s: {stage} ({last_error}); its last log lines are in /v1/status",
        after.as_secs()
    )]
    Timeout {
        after: Duration,
        stage: &'static str,
        last_error: String,
    },
}

fn check(supervisor: Option<&Supervisor>) -> Result<(), SupervisorError> {
    supervisor.map_or(Ok(()), Supervisor::check)
}

/// What a ready k3s offers the next steps.
#[derive(Clone)]
pub struct Ready {
    pub kube: Kube,
    pub server_version: String,
    pub node: NodeSummary,
}

/// Waits until k3s is ready, reporting each stage through `progress`. Without a supervisor
/// (an external API server) only the API is waited for; with one, a crash loop ends the wait.
pub async fn wait_ready(
    supervisor: Option<&Supervisor>,
    kubeconfig: &Path,
    node: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str, f64) + Sync),
) -> Result<Ready, ReadyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let expired = |stage, last_error: String| ReadyError::Timeout {
        after: timeout,
        stage,
        last_error,
    };

    progress("waiting for the kubeconfig", 0.1);
    while !kubeconfig.exists() {
        check(supervisor)?;
        if tokio::time::Instant::now() >= deadline {
            return Err(expired(
                "no kubeconfig yet",
                format!("{} does not exist", kubeconfig.display()),
            ));
        }
        tokio::time::sleep(POLL).await;
    }

    progress("waiting for the API server's /readyz", 0.4);
    let kube = loop {
        check(supervisor)?;
        let attempt = async {
            let kube = Kube::from_kubeconfig(kubeconfig).await?;
            kube.readyz().await?;
            Ok::<_, KubeError>(kube)
        };
        match attempt.await {
            Ok(kube) => break kube,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(expired("/readyz is not ok", error.to_string()));
            }
            Err(error) => tracing::debug!(%error, "k3s API not ready yet"),
        }
        tokio::time::sleep(POLL).await;
    };

    progress(&format!("waiting for node {node} to be Ready"), 0.7);
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let nodes: Api<Node> = Api::all(kube.client().clone());
    let what = format!("Node {node} Ready");
    let watch = kube.wait_for(nodes, node, &what, remaining, |n: Option<&Node>| {
        node_is_ready(n)
    });
    let crash = async {
        let Some(supervisor) = supervisor else {
            return std::future::pending().await;
        };
        loop {
            supervisor.changed().await;
            if let Err(error) = supervisor.check() {
                return error;
            }
        }
    };
    let ready_node = tokio::select! {
        result = watch => result.map_err(|e| expired("the node is not Ready", e.to_string()))?,
        error = crash => return Err(error.into()),
    };
    let node = ready_node
        .as_ref()
        .map(NodeSummary::from_node)
        .ok_or_else(|| expired("the node is not Ready", format!("Node {node} is gone")))?;
    let server_version = kube
        .server_version()
        .await
        .map_err(|e| expired("/version does not answer", e.to_string()))?;
    progress("ready", 1.0);
    Ok(Ready {
        kube,
        server_version,
        node,
    })
}
