//! The hub follows the directory: after every sync, every active member is a hub user with the
//! computed admin flag, and a removed or disabled user has their server stopped, their tokens
//! revoked and their hub user deleted (which ends their login cookie; the home volume stays,
//! because KubeSpawner's `delete_pvc` is off and its name comes from the user name). Their Dask
//! clusters are deleted too, through Kubernetes, whether or not the hub answers.
//!
//! Level-triggered: each run compares the user table (SQLite, written only by complete syncs)
//! with the hub's users and makes the difference. A hub that is down delays a run; the next
//! one, after a backoff, finds the same difference. Hub users the directory never knew are
//! left alone.

mod client;
pub mod dask;
pub mod enforce;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;

pub use client::{HubClient, HubError, HubToken, HubUser, ServerOutcome};
pub use enforce::{EnforceReport, Plan, plan};

use crate::config::Config;
use crate::driver::{Driver, Job, Outcome, Why};
use crate::state::{State, StateCall};

/// The loop name the watchdog knows.
pub const LOOP_NAME: &str = "hub-sync";
/// The hub's API port inside the cluster (the chart's `hub` Service).
pub const HUB_SERVICE_PORT: u16 = 8081;
/// A run happens at least this often, to mend drift (an admin flag changed in the hub's UI).
const PERIOD: Duration = Duration::from_secs(300);

/// What status shows about the hub.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct HubStatus {
    /// The API pangeod talks to.
    pub api_url: Option<String>,
    pub version: Option<String>,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    /// Why the last run did not finish; it is retried.
    pub last_error: Option<String>,
    /// True while the hub is not installed yet (Kubernetes or the chart is still coming up):
    /// the error is then a wait, not a fault.
    pub waiting_for_install: bool,
    pub last_report: Option<EnforceReport>,
}

/// Keeps the hub equal to the user table, and hands out the hub client to the API.
/// The hub's users as last listed (by a hub sync run, with its own changes applied, or by a
/// refresh for the API), so that `GET /v1/users` pages cost no hub request.
#[derive(Debug)]
pub struct Listing {
    pub at: Instant,
    /// When, as RFC 3339.
    pub listed_at: String,
    pub users: std::collections::HashMap<String, HubUser>,
}

/// How old a listing may be before a reader sets off a refresh (it is served meanwhile).
pub const LISTING_FRESH: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct HubSync {
    state: Arc<State>,
    k3s: crate::k3s::K3sRuntime,
    kick: Arc<Notify>,
    status: watch::Sender<HubStatus>,
    client: Arc<Mutex<Option<(crate::config::Hub, HubClient)>>>,
    run_lock: Arc<Mutex<()>>,
    listing: Arc<std::sync::RwLock<Option<Arc<Listing>>>>,
    refreshing: Arc<Mutex<()>>,
}

impl HubSync {
    pub fn new(state: Arc<State>, k3s: crate::k3s::K3sRuntime) -> Self {
        Self {
            state,
            k3s,
            kick: Arc::new(Notify::new()),
            status: watch::channel(HubStatus::default()).0,
            client: Arc::new(Mutex::new(None)),
            run_lock: Arc::new(Mutex::new(())),
            listing: Arc::new(std::sync::RwLock::new(None)),
            refreshing: Arc::new(Mutex::new(())),
        }
    }

    /// The hub's users as last listed, if they ever were.
    pub fn listing(&self) -> Option<Arc<Listing>> {
        self.listing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `users`, the hub as it was at `as_of`, unless a newer listing is kept already (a
    /// slow refresh must not undo what a hub sync run did after it began).
    fn set_listing(&self, users: Vec<HubUser>, as_of: Instant) -> Arc<Listing> {
        let mut slot = self.listing.write().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = slot.as_ref().filter(|c| c.at > as_of) {
            return current.clone();
        }
        let listing = Arc::new(Listing {
            at: as_of,
            listed_at: crate::state::now(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
        });
        *slot = Some(listing.clone());
        listing
    }

    /// One user as the hub reports them now (after a server start or stop), or gone.
    pub fn update_listed_user(&self, name: &str, user: Option<HubUser>) {
        self.update_listed_users([(name.to_string(), user)]);
    }

    /// Users as the hub reports them now, in one new listing (the map is copied once).
    pub fn update_listed_users(
        &self,
        updates: impl IntoIterator<Item = (String, Option<HubUser>)>,
    ) {
        let mut slot = self.listing.write().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = slot.as_ref() {
            let mut users = current.users.clone();
            for (name, user) in updates {
                match user {
                    Some(user) => users.insert(name, user),
                    None => users.remove(&name),
                };
            }
            *slot = Some(Arc::new(Listing {
                at: current.at,
                listed_at: current.listed_at.clone(),
                users,
            }));
        }
    }

    /// Lists the hub's users again, one listing at a time: a caller that waited for another's
    /// listing takes that one.
    pub async fn refresh_listing(&self, client: &HubClient) -> Result<Arc<Listing>, HubError> {
        let asked = Instant::now();
        let _one = self.refreshing.lock().await;
        if let Some(listing) = self.listing().filter(|l| l.at >= asked) {
            return Ok(listing);
        }
        self.list_now(client).await
    }

    async fn list_now(&self, client: &HubClient) -> Result<Arc<Listing>, HubError> {
        let as_of = Instant::now();
        Ok(self.set_listing(client.users().await?, as_of))
    }

    /// A refresh in the background unless one runs already (for readers of a stale listing).
    pub fn refresh_listing_later(&self, client: HubClient) {
        let Ok(guard) = self.refreshing.clone().try_lock_owned() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.list_now(&client).await {
                tracing::debug!(%error, "refreshing the hub's user listing failed");
            }
            drop(guard);
        });
    }

    pub fn status(&self) -> HubStatus {
        self.status.borrow().clone()
    }

    /// Asks for a run soon (after an admin change through the API, for example).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The hub client for this config: `hub.api_url` and `hub.api_token_file` when set (a hub
    /// outside the cluster, as in the tests), else the chart's `hub` Service and the
    /// `pangeo-appliance` token pangeod generated for the chart. Resolved once per `[hub]`
    /// settings and kept (no file, database or Service read per request); a run that cannot
    /// reach the hub or is refused drops it, so the next call resolves afresh.
    pub async fn client(&self, config: &Config) -> Result<HubClient, HubError> {
        let mut cached = self.client.lock().await;
        if let Some((settings, client)) = cached.as_ref()
            && *settings == config.hub
        {
            return Ok(client.clone());
        }
        let client = self.resolve(config).await?;
        *cached = Some((config.hub.clone(), client.clone()));
        self.status
            .send_modify(|s| s.api_url = Some(client.api_url().to_string()));
        Ok(client)
    }

    /// Drops the kept client: the Service's address or the token may have changed.
    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    async fn resolve(&self, config: &Config) -> Result<HubClient, HubError> {
        let api_url = match &config.hub.api_url {
            Some(url) => url.clone(),
            None => self.service_url().await?,
        };
        let token = match &config.hub.api_token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    HubError::Config(format!(
                        "cannot read hub.api_token_file {}: {e}; give the pangeo-appliance service's token",
                        path.display()
                    ))
                })?,
            None => {
                self.state
                    .call(crate::components::secrets)
                    .await
                    .map_err(|e| HubError::Config(e.to_string()))?
                    .appliance_token
            }
        };
        let ca = match &config.hub.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                HubError::Config(format!("cannot read hub.ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        HubClient::new(&api_url, token, ca.as_deref())
    }

    async fn service_url(&self) -> Result<String, HubError> {
        use k8s_openapi::api::core::v1::Service;
        let not_yet = |why: String| HubError::NotInstalled(why);
        let kube = self
            .k3s
            .kube()
            .ok_or_else(|| not_yet("Kubernetes is not up".into()))?;
        let services: kube::Api<Service> =
            kube::Api::namespaced(kube.client().clone(), crate::components::NAMESPACE);
        let service = services
            .get_opt("hub")
            .await
            .map_err(|e| not_yet(format!("reading Service hub: {e}")))?
            .ok_or_else(|| not_yet("no Service hub".into()))?;
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| not_yet("Service hub has no cluster IP".into()))?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        Ok(format!("http://{host}:{HUB_SERVICE_PORT}/hub/api"))
    }

    /// Deletes the Dask clusters of users who are removed or disabled. Needs only Kubernetes:
    /// a hub that is down does not keep a removed user's workers running. Users the directory
    /// never knew are left alone, as in the hub.
    async fn stop_revoked_dask_clusters(&self, users: &[crate::state::UserRecord]) {
        let Some(kube) = self.k3s.kube() else {
            return;
        };
        let revoked: std::collections::HashMap<String, String> = users
            .iter()
            .filter(|u| u.state != crate::state::UserState::Active)
            .map(|u| (u.name.clone(), u.state.as_str().to_string()))
            .collect();
        match dask::stop_clusters_of(&kube, crate::components::NAMESPACE, &revoked).await {
            Ok(stopped) if stopped.is_empty() => {}
            Ok(stopped) => {
                for cluster in &stopped {
                    tracing::info!(user = %cluster.user, cluster = %cluster.cluster, because = %cluster.because, "stopped a Dask cluster of a user who may no longer log in");
                }
                let events: Vec<_> = stopped
                    .iter()
                    .map(|c| {
                        (
                            "dask.cluster-stopped",
                            serde_json::json!({ "user": c.user, "cluster": c.cluster, "because": c.because }),
                        )
                    })
                    .collect();
                let recorded = self
                    .state
                    .call(move |s| s.record_events("hub-sync", &events))
                    .await;
                if let Err(error) = recorded {
                    tracing::error!(%error, "cannot record the stopped Dask clusters");
                }
            }
            // Not installed yet (no CRD): nothing can run.
            Err(error @ crate::k8s::KubeError::NotFound { .. }) => {
                tracing::debug!(%error, "no Dask clusters to check yet")
            }
            Err(error) => {
                tracing::warn!(%error, "the Dask clusters of removed users were not checked; the next run tries again")
            }
        }
    }

    /// One run: makes the hub equal to the user table, and stops the Dask clusters of users
    /// who may no longer log in.
    pub async fn enforce(&self, config: &Config) -> Result<EnforceReport, HubError> {
        let _one_at_a_time = self.run_lock.lock().await;
        let started_at = crate::state::now();
        // The user table, read once for both (off the async threads: it is SQLite).
        let state = self.state.clone();
        let users = tokio::task::spawn_blocking(move || enforce::all_users(&state))
            .await
            .unwrap_or_else(|e| Err(HubError::Config(format!("reading the user table: {e}"))));
        if let Ok(users) = &users {
            self.stop_revoked_dask_clusters(users).await;
        }
        let outcome = async {
            let users = users?;
            let client = self.client(config).await?;
            let version = client.version().await?;
            self.status.send_modify(|s| s.version = Some(version));
            let (report, listing) = enforce::run_with_listing(&client, &self.state, &users).await?;
            self.set_listing(listing, Instant::now());
            Ok(report)
        }
        .await;
        if let Err(HubError::Unreachable { .. } | HubError::Unauthorized { .. }) = &outcome {
            self.forget_client().await;
        }
        self.status.send_modify(|s| {
            s.last_run_at = Some(started_at.clone());
            s.waiting_for_install = matches!(outcome, Err(HubError::NotInstalled(_)));
            match &outcome {
                Ok(report) => {
                    s.last_success_at = Some(started_at.clone());
                    s.last_error = None;
                    s.last_report = Some(report.clone());
                }
                Err(error) => s.last_error = Some(error.to_string()),
            }
        });
        outcome
    }

    /// Runs after every directory sync, on a kick, every few minutes, and again with a backoff
    /// (2 s to 30 s) while the hub is down, until `cancel` is cancelled.
    pub async fn run_loop(
        self,
        config: watch::Receiver<Option<Arc<Config>>>,
        synced: watch::Receiver<crate::directory::SyncStatus>,
        heartbeats: crate::systemd::Heartbeats,
        cancel: CancellationToken,
    ) {
        let job = HubLoop {
            hub: self,
            config,
            synced,
        };
        Driver::new(LOOP_NAME, heartbeats, cancel).drive(job).await;
    }
}

struct HubLoop {
    hub: HubSync,
    config: watch::Receiver<Option<Arc<Config>>>,
    synced: watch::Receiver<crate::directory::SyncStatus>,
}

impl Job for HubLoop {
    type Wake = ();

    async fn wake(&mut self) -> Option<()> {
        tokio::select! {
            () = self.hub.kick.notified() => Some(()),
            changed = self.synced.changed() => changed.ok(),
            changed = self.config.changed() => changed.ok(),
        }
    }

    async fn run(&mut self, _: Why<()>) -> Outcome {
        let Some(current) = self.config.borrow().clone() else {
            return Outcome::Done(Some(Duration::from_secs(5)));
        };
        match self.hub.enforce(&current).await {
            // Changes the hub refused are tried again soon; the rest at the period.
            Ok(report) if report.failed > 0 => Outcome::Done(Some(Duration::from_secs(10))),
            Ok(_) => Outcome::Done(Some(PERIOD)),
            Err(error @ HubError::NotInstalled(_)) => {
                tracing::debug!(%error, "hub sync waits");
                Outcome::Retry(None)
            }
            Err(error) => Outcome::Retry(Some(error.to_string())),
        }
    }
}
