//! What `GET /v1/status` shows of the cluster and of the k3s process, read in the background.
//! A status request never waits on the API server or on systemd: it serves the last reading
//! (`cluster_read_at` says when) and, when that is older than [`FRESH`], sets off one new
//! reading for the next request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::components::capacity::Capacity;

use super::routes::Rollouts;

/// How old a reading may be before a status request sets off another.
pub const FRESH: Duration = Duration::from_secs(5);
/// How long one reading may wait for the API server.
const BOUND: Duration = Duration::from_secs(3);

/// One reading.
#[derive(Debug, Default)]
pub struct Reading {
    pub at: Option<Instant>,
    /// When, as RFC 3339.
    pub read_at: Option<String>,
    pub rollouts: Option<Rollouts>,
    pub capacity: Option<Capacity>,
    pub capacity_error: Option<String>,
    /// The supervised k3s process (a `systemctl show` for the systemd backend).
    pub process: Option<crate::k3s::supervisor::ProcessStatus>,
}

#[derive(Clone, Default)]
pub struct ClusterView {
    reading: Arc<RwLock<Arc<Reading>>>,
    reading_now: Arc<tokio::sync::Mutex<()>>,
}

impl ClusterView {
    /// The last reading; a new one is set off when it is stale (at most one at a time).
    pub fn current(
        &self,
        k3s: &crate::k3s::K3sRuntime,
        config: Option<Arc<crate::config::Config>>,
    ) -> Arc<Reading> {
        let reading = self
            .reading
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if reading.at.is_none_or(|at| at.elapsed() > FRESH)
            && let Ok(guard) = self.reading_now.clone().try_lock_owned()
        {
            let (this, k3s) = (self.clone(), k3s.clone());
            tokio::spawn(async move {
                let next = read(&k3s, config).await;
                *this.reading.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                drop(guard);
            });
        }
        reading
    }
}

async fn read(k3s: &crate::k3s::K3sRuntime, config: Option<Arc<crate::config::Config>>) -> Reading {
    let process = {
        let k3s = k3s.clone();
        tokio::task::spawn_blocking(move || k3s.process_status())
            .await
            .ok()
            .flatten()
    };
    let mut reading = Reading {
        at: Some(Instant::now()),
        read_at: Some(crate::state::now()),
        process,
        ..Default::default()
    };
    let (Some(kube), Some(config)) = (k3s.kube(), config) else {
        return reading;
    };
    let (rollouts, capacity) = tokio::join!(
        tokio::time::timeout(
            BOUND,
            crate::components::rollout::rollouts(
                &kube,
                crate::components::NAMESPACE,
                &crate::components::RELEASES,
            ),
        ),
        tokio::time::timeout(BOUND, crate::components::capacity::capacity(&kube, &config)),
    );
    reading.rollouts = match rollouts {
        Ok(Ok(list)) => Some(list.into_iter().collect()),
        _ => None,
    };
    (reading.capacity, reading.capacity_error) = match capacity {
        Ok(Ok(capacity)) => (Some(capacity), None),
        Ok(Err(error)) => (None, Some(error.to_string())),
        Err(_) => (
            None,
            Some(format!("the API server did not answer within {BOUND:?}")),
        ),
    };
    reading
}
