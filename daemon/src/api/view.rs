//! What `GET /v1/status` shows of the cluster and of the k3s process, with no request of the
//! Kubernetes API and no fork. Rollouts and notebook capacity are computed from the status
//! reflectors' stores (`components::cache`: started on the first status request after the
//! `kubernetes-api` step connected, then kept up to date by watches). The k3s process (a
//! `systemctl show` for the systemd backend) is read in the background, at most every
//! [`FRESH`], and a status request serves the last reading (`cluster_read_at` says when).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::components::cache::ClusterCache;
use crate::components::capacity::Capacity;

use super::routes::Rollouts;

/// How old the process reading may be before a status request sets off another.
pub const FRESH: Duration = Duration::from_secs(5);

/// What status shows of the cluster.
#[derive(Debug, Default)]
pub struct Reading {
    /// When the process was last read, as RFC 3339.
    pub read_at: Option<String>,
    pub rollouts: Option<Rollouts>,
    pub capacity: Option<Capacity>,
    pub capacity_error: Option<String>,
    /// The supervised k3s process.
    pub process: Option<crate::k3s::supervisor::ProcessStatus>,
}

/// The last reading of the process.
#[derive(Debug, Default)]
struct ProcessReading {
    at: Option<Instant>,
    read_at: Option<String>,
    process: Option<crate::k3s::supervisor::ProcessStatus>,
}

#[derive(Clone, Default)]
pub struct ClusterView {
    process: Arc<RwLock<Arc<ProcessReading>>>,
    reading_now: Arc<tokio::sync::Mutex<()>>,
    cache: Arc<OnceLock<ClusterCache>>,
}

impl ClusterView {
    /// The cluster as the reflectors hold it, and the last reading of the process (a new one is
    /// set off when it is stale, at most one at a time).
    pub fn current(
        &self,
        k3s: &crate::k3s::K3sRuntime,
        config: Option<&crate::config::Config>,
    ) -> Reading {
        let process = self
            .process
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if process.at.is_none_or(|at| at.elapsed() > FRESH)
            && let Ok(guard) = self.reading_now.clone().try_lock_owned()
        {
            let (this, k3s) = (self.clone(), k3s.clone());
            tokio::spawn(async move {
                let read = tokio::task::spawn_blocking(move || k3s.process_status())
                    .await
                    .ok()
                    .flatten();
                let next = ProcessReading {
                    at: Some(Instant::now()),
                    read_at: Some(crate::state::now()),
                    process: read,
                };
                *this.process.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                drop(guard);
            });
        }
        let mut reading = Reading {
            read_at: process.read_at.clone(),
            process: process.process.clone(),
            ..Default::default()
        };
        let cache = match (self.cache.get(), k3s.kube()) {
            (Some(cache), _) => cache,
            (None, Some(kube)) => self.cache.get_or_init(|| ClusterCache::start(&kube)),
            (None, None) => return reading,
        };
        reading.rollouts = cache
            .rollouts(&crate::components::RELEASES)
            .map(|list| list.into_iter().collect());
        if let Some(config) = config {
            (reading.capacity, reading.capacity_error) = match cache.capacity(config) {
                Ok(capacity) => (Some(capacity), None),
                Err(error) => (None, Some(error)),
            };
        }
        reading
    }
}
