//! Users, directory sync and admins.

use axum::Extension;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::directory::{SyncReport, SyncStatus};
use crate::hub::{HubClient, HubError, HubUser, ServerOutcome};
use crate::state::{SyncRun, UserRecord, UserState};

use super::auth::Actor;
use super::{AppState, Problem};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Only users in this state.
    state: Option<UserState>,
    /// Page after this user name (from `next_after` of the previous page).
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl<'de> Deserialize<'de> for UserState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UserState::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown state {text:?}; use active, disabled or removed"
            ))
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
    /// Why the hub's view is missing (the hub is down, or not installed yet).
    pub hub_error: Option<String>,
    /// When the hub's users shown were listed (RFC 3339). Pages are served from the last
    /// listing (the hub sync's, or a refresh), and one older than 15 s is listed again in the
    /// background, so a page costs no hub request.
    pub hub_listed_at: Option<String>,
}

/// A user as the directory sync knows them, with the hub's view.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    #[serde(flatten)]
    pub user: UserRecord,
    /// The hub's view; null when the hub has no such user or could not be asked.
    pub hub: Option<HubView>,
}

/// What the hub says about a user.
#[derive(Serialize, ToSchema)]
pub struct HubView {
    /// The hub's admin flag (pangeod keeps it equal to `hub_grant` if set, else to
    /// `admin_sources` being non-empty).
    pub admin: bool,
    /// `running`, `starting`, `stopping` or `stopped`.
    pub server: String,
    pub last_activity: Option<String>,
}

impl From<&HubUser> for HubView {
    fn from(user: &HubUser) -> Self {
        Self {
            admin: user.admin,
            server: user.server_state().to_string(),
            last_activity: user.last_activity.clone(),
        }
    }
}

/// The hub client for the config in force, or 503 naming why there is none.
async fn hub_client(app: &AppState) -> Result<HubClient, Problem> {
    let config = app.boot.config.borrow().clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-config",
            "No valid config",
            "there is no valid config yet; see pangeoctl status",
        )
    })?;
    app.hub
        .client(&config)
        .await
        .map(HubClient::for_api)
        .map_err(hub_problem)
}

/// Hub errors as problems: a hub that is down or not installed is 503, with the reason.
pub(super) fn hub_problem(error: HubError) -> Problem {
    let (status, code, title) = match &error {
        HubError::Unreachable { .. }
        | HubError::Timeout { .. }
        | HubError::Config(_)
        | HubError::NotInstalled(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "hub-unavailable",
            "The hub is unavailable",
        ),
        HubError::Status { status, .. } if *status >= 500 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "hub-unavailable",
            "The hub is unavailable",
        ),
        HubError::Unauthorized { .. } => (
            StatusCode::BAD_GATEWAY,
            "hub-refused",
            "The hub refused pangeod",
        ),
        HubError::NotFound { .. } => (
            StatusCode::NOT_FOUND,
            "hub-user-missing",
            "Not a hub user yet",
        ),
        HubError::Status { .. } | HubError::Decode { .. } => {
            (StatusCode::BAD_GATEWAY, "hub-error", "The hub failed")
        }
    };
    Problem::new(status, code, title, error.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::state::StateError> + Send + 'static,
) -> Result<T, Problem> {
    crate::waits::note(|| "the state database (its disk)".into());
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(Problem::from)
}

/// The users the directory sync knows, by name.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UsersQuery), responses(
    (status = 200, body = UsersPage),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json")
))]
pub async fn list_users(
    Extract(app): Extract<AppState>,
    Query(query): Query<UsersQuery>,
) -> Result<Json<UsersPage>, Problem> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-parameter",
            "Invalid parameter",
            "limit must be from 1 to 1000",
        )
        .with_field("limit"));
    }
    let state = app.state.clone();
    let users = blocking(move || state.users(query.state, query.after.as_deref(), limit)).await?;
    let next_after = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.name.clone()))
        .flatten();
    // The hub's view, from the last listing; only when there has never been one does the page
    // wait for it, bounded so a slow hub cannot hold the directory's view hostage.
    let listing = match app.hub.listing() {
        Some(listing) => {
            if listing.at.elapsed() > crate::hub::LISTING_FRESH
                && let Ok(client) = hub_client(&app).await
            {
                app.hub.refresh_listing_later(client);
            }
            Ok(listing)
        }
        None => match hub_client(&app).await {
            Ok(client) => {
                match tokio::time::timeout(HUB_VIEW_TIMEOUT, app.hub.refresh_listing(&client)).await
                {
                    Ok(Ok(listing)) => Ok(listing),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "the hub did not list its users within {HUB_VIEW_TIMEOUT:?}"
                    )),
                }
            }
            Err(problem) => Err(problem.detail),
        },
    };
    let (listing, hub_error) = match listing {
        Ok(listing) => (Some(settle_pending(&app, listing, &users).await), None),
        Err(error) => (None, Some(error)),
    };
    let users = users
        .into_iter()
        .map(|user| UserView {
            hub: listing
                .as_ref()
                .and_then(|l| l.users.get(&user.name))
                .map(HubView::from),
            user,
        })
        .collect();
    Ok(Json(UsersPage {
        users,
        next_after,
        hub_error,
        hub_listed_at: listing.map(|l| l.listed_at.clone()),
    }))
}

const HUB_VIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// At most this many servers of a page, listed as starting or stopping, are asked again.
const PENDING_RECHECK: usize = 16;
/// How long the page waits for those answers.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A server the listing shows starting or stopping may have finished since (the listing is
/// up to [`crate::hub::LISTING_FRESH`] old, and a start the API answered with 202 goes on in
/// the hub): the page asks the hub for those users again, a few at a time and bounded, so
/// `pangeoctl servers` shows a server running once the hub says so. Whatever does not answer in
/// time is shown as listed.
async fn settle_pending(
    app: &AppState,
    listing: std::sync::Arc<crate::hub::Listing>,
    users: &[UserRecord],
) -> std::sync::Arc<crate::hub::Listing> {
    let pending: Vec<String> = users
        .iter()
        .filter(|u| {
            listing
                .users
                .get(&u.name)
                .is_some_and(|h| h.pending.is_some())
        })
        .take(PENDING_RECHECK)
        .map(|u| u.name.clone())
        .collect();
    if pending.is_empty() {
        return listing;
    }
    let Ok(client) = hub_client(app).await else {
        return listing;
    };
    let asked = futures_util::future::join_all(
        pending
            .iter()
            .map(|name| tokio::time::timeout(PENDING_WAIT, client.user(name))),
    )
    .await;
    app.hub
        .update_listed_users(pending.into_iter().zip(asked).filter_map(
            |(name, answer)| match answer {
                Ok(Ok(user)) => Some((name, user)),
                _ => None,
            },
        ));
    app.hub.listing().unwrap_or(listing)
}

/// What a server request did.
#[derive(Serialize, ToSchema)]
pub struct ServerChange {
    pub user: String,
    /// `done`: started (ready) or stopped; `already`: it already was; `pending`: still
    /// starting or stopping after the request's wait (poll GET /v1/users).
    pub outcome: String,
    /// The server's state as the hub reports it now.
    pub server: String,
}

/// How long a server request waits for the hub before answering 202.
const SERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// An active member, or 404 (unknown) / 409 (removed or disabled).
async fn active_member(app: &AppState, name: &str) -> Result<String, Problem> {
    let lookup = name.to_lowercase();
    let state = app.state.clone();
    let user = {
        let lookup = lookup.clone();
        blocking(move || state.user(&lookup)).await?
    };
    match user {
        None => Err(unknown_user(name)),
        Some(user) if user.state != UserState::Active => Err(Problem::new(
            StatusCode::CONFLICT,
            "user-not-active",
            "User not active",
            format!(
                "{name} is {} in the directory and may not run a server; re-enable them in FreeIPA",
                user.state.as_str()
            ),
        )),
        Some(_) => Ok(lookup),
    }
}

async fn server_change(
    app: &AppState,
    actor: &Actor,
    name: &str,
    start: bool,
) -> Result<(StatusCode, Json<ServerChange>), Problem> {
    let user = active_member(app, name).await?;
    let client = hub_client(app).await?;
    let outcome = if start {
        client.start_server(&user, SERVER_WAIT).await
    } else {
        client.stop_server(&user, SERVER_WAIT).await
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(HubError::NotFound { .. }) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "hub-user-missing",
                "Not a hub user yet",
                format!(
                    "{user} is a member but not yet a hub user; pangeod adds them at the next hub sync (see pangeoctl status)"
                ),
            ));
        }
        Err(error) => return Err(hub_problem(error)),
    };
    let server = match client.user(&user).await {
        Ok(Some(hub_user)) => {
            let server = hub_user.server_state().to_string();
            app.hub.update_listed_user(&user, Some(hub_user));
            server
        }
        Ok(None) => {
            app.hub.update_listed_user(&user, None);
            "stopped".to_string()
        }
        Err(error) => return Err(hub_problem(error)),
    };
    let (status, outcome) = match outcome {
        ServerOutcome::Done => (StatusCode::OK, "done"),
        ServerOutcome::Already => (StatusCode::OK, "already"),
        ServerOutcome::Pending => (StatusCode::ACCEPTED, "pending"),
    };
    // Recorded whatever the outcome: a pending start or stop was asked for all the same.
    let state = app.state.clone();
    let action = match (start, status == StatusCode::OK) {
        (true, true) => "server.started",
        (true, false) => "server.start-requested",
        (false, true) => "server.stopped",
        (false, false) => "server.stop-requested",
    };
    let details = serde_json::json!({ "user": user, "outcome": outcome });
    let who = actor.0.clone();
    let _ = blocking(move || state.record_event(&who, action, details)).await;
    Ok((
        status,
        Json(ServerChange {
            user,
            outcome: outcome.to_string(),
            server,
        }),
    ))
}

/// Starts a member's notebook server through the hub; 202 while it is still starting.
#[utoipa::path(post, path = "/v1/users/{name}/server", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = ServerChange, description = "running"),
    (status = 202, body = ServerChange, description = "still starting"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "not known from the directory"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "removed or disabled, or not yet a hub user"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "the hub is down")
))]
pub async fn start_server(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ServerChange>), Problem> {
    server_change(&app, &actor, &name, true).await
}

/// Stops a member's notebook server; 202 while it is still stopping. The home volume stays.
#[utoipa::path(delete, path = "/v1/users/{name}/server", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = ServerChange, description = "stopped"),
    (status = 202, body = ServerChange, description = "still stopping"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "not known from the directory"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "removed or disabled, or not yet a hub user"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "the hub is down")
))]
pub async fn stop_server(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ServerChange>), Problem> {
    server_change(&app, &actor, &name, false).await
}

fn unknown_user(name: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-user",
        "Unknown user",
        format!(
            "{name} is not known from the directory: add them to the cluster's notebook users group in FreeIPA, then sync (POST /v1/sync)"
        ),
    )
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{name}", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = UserRecord),
    (status = 404, body = Problem, content_type = "application/problem+json")
))]
pub async fn get_user(
    Extract(app): Extract<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserRecord>, Problem> {
    let state = app.state.clone();
    let lookup = name.to_lowercase();
    blocking(move || state.user(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| unknown_user(&name))
}

#[derive(Serialize, ToSchema)]
pub struct SyncOverview {
    pub status: SyncStatus,
    /// Recent runs, newest first.
    pub runs: Vec<SyncRun>,
}

/// The recent directory syncs, and a held result waiting for confirmation.
#[utoipa::path(get, path = "/v1/sync", tag = "users", responses((status = 200, body = SyncOverview)))]
pub async fn sync_overview(Extract(app): Extract<AppState>) -> Result<Json<SyncOverview>, Problem> {
    let state = app.state.clone();
    let runs = blocking(move || state.sync_runs(20)).await?;
    Ok(Json(SyncOverview {
        status: app.directory.status().borrow().clone(),
        runs,
    }))
}

/// Syncs with FreeIPA now (a full read). A failed sync changes nothing; the run says why.
#[utoipa::path(post, path = "/v1/sync", tag = "users", responses(
    (status = 200, body = SyncReport, description = "the run; `run.outcome` is applied, unchanged, held or failed"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "no valid config yet")
))]
pub async fn sync_now(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<SyncReport>, Problem> {
    let config = app.boot.config.borrow().clone();
    let Some(config) = config else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "config-invalid",
            "No valid config yet",
            app.boot.status.borrow().summary(),
        ));
    };
    tracing::info!(actor = %actor.0, "directory sync requested");
    let report = match app.directory.run(&config, "api", true).await {
        Ok(report) => report,
        Err(_) => {
            // Recorded by the sync itself; return the failed run.
            let run = app.directory.status().borrow().last_run.clone();
            let Some(run) = run else {
                return Err(Problem::internal("the failed sync left no record"));
            };
            SyncReport {
                run,
                changes: Default::default(),
            }
        }
    };
    Ok(Json(report))
}

/// Applies a held sync result (one that drops more than half the users).
#[utoipa::path(post, path = "/v1/sync/confirm", tag = "users", responses(
    (status = 200, body = SyncReport),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "nothing is held")
))]
pub async fn confirm_sync(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<SyncReport>, Problem> {
    match app.directory.confirm().await {
        Ok(Some(report)) => {
            let (state, run) = (app.state.clone(), report.run.id);
            let _ = blocking(move || {
                state.record_event(
                    &actor.0,
                    "sync.confirmed",
                    serde_json::json!({ "run": run }),
                )
            })
            .await;
            Ok(Json(report))
        }
        Ok(None) => Err(Problem::new(
            StatusCode::CONFLICT,
            "nothing-pending",
            "Nothing to confirm",
            "no sync result is held; see GET /v1/sync",
        )),
        Err(error) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state-unavailable",
            "Cannot apply",
            error.to_string(),
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminChange {
    pub user: String,
    pub changed: bool,
}

/// Makes a user hub admin (kept locally, on top of the config and the admins group).
#[utoipa::path(put, path = "/v1/admins/{name}", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = AdminChange),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "not an active user")
))]
pub async fn grant_admin(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<AdminChange>, Problem> {
    let lookup = name.to_lowercase();
    let state = app.state.clone();
    let user = {
        let lookup = lookup.clone();
        blocking(move || state.user(&lookup)).await?
    };
    if user.is_none_or(|u| u.state != UserState::Active) {
        return Err(unknown_user(&name));
    }
    let state = app.state.clone();
    let who = actor.0.clone();
    let changed = {
        let lookup = lookup.clone();
        blocking(move || state.set_api_admin(&lookup, true, &who)).await?
    };
    app.hub.kick();
    Ok(Json(AdminChange {
        user: lookup,
        changed,
    }))
}

/// Takes back an admin right granted through the API. Rights from the config or the admins
/// group stay.
#[utoipa::path(delete, path = "/v1/admins/{name}", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = AdminChange),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "no admin right granted through the API")
))]
pub async fn revoke_admin(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<AdminChange>, Problem> {
    let lookup = name.to_lowercase();
    let state = app.state.clone();
    let who = actor.0.clone();
    let changed = {
        let lookup = lookup.clone();
        blocking(move || state.set_api_admin(&lookup, false, &who)).await?
    };
    app.hub.kick();
    if !changed {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-an-api-admin",
            "No API admin right",
            format!(
                "{name} has no admin right granted through the API; rights from hub.admin_users or the admins group are changed there"
            ),
        ));
    }
    Ok(Json(AdminChange {
        user: lookup,
        changed,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct DaskClusters {
    pub user: String,
    pub clusters: Vec<crate::hub::dask::DaskClusterView>,
}

/// A user's Dask clusters, from the gateway's `DaskCluster` objects on Kubernetes.
#[utoipa::path(get, path = "/v1/users/{name}/dask-clusters", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = DaskClusters),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "not known from the directory"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "Kubernetes is down, or Dask Gateway is not installed yet")
))]
pub async fn dask_clusters(
    Extract(app): Extract<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DaskClusters>, Problem> {
    let lookup = name.to_lowercase();
    let state = app.state.clone();
    let known = {
        let lookup = lookup.clone();
        blocking(move || state.user(&lookup)).await?
    };
    if known.is_none() {
        return Err(unknown_user(&name));
    }
    let unavailable = kubernetes_unavailable;
    let kube = kube_now(&app)?;
    match crate::hub::dask::clusters_of(&kube, crate::components::NAMESPACE, &lookup).await {
        Ok(clusters) => Ok(Json(DaskClusters {
            user: lookup,
            clusters,
        })),
        Err(crate::k8s::KubeError::NotFound { .. }) => Err(unavailable(
            "the DaskCluster resource does not exist yet: Dask Gateway is not installed; see the components in pangeoctl status".into(),
        )),
        Err(error) => Err(unavailable(error.to_string())),
    }
}

/// A home volume with what the appliance knows of its owner.
#[derive(Serialize, ToSchema)]
pub struct HomeView {
    #[serde(flatten)]
    pub home: crate::components::homes::Home,
    /// The owner in the user table: `active`, `disabled`, `removed`, or null if the directory
    /// sync never knew them.
    pub member: Option<UserState>,
    /// When the owner last used the hub, as the hub's last listing has it.
    pub last_activity: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HomesPage {
    pub homes: Vec<HomeView>,
}

pub(super) fn kubernetes_unavailable(detail: String) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kubernetes-unavailable",
        "Kubernetes is unavailable",
        detail,
    )
}

/// The Kubernetes client, or 503 naming the steps to look at.
pub(super) fn kube_now(app: &AppState) -> Result<crate::k8s::Kube, Problem> {
    app.k3s.kube().ok_or_else(|| {
        kubernetes_unavailable(
            "Kubernetes is not up yet (the k3s and kubernetes-api steps); see pangeoctl status"
                .into(),
        )
    })
}

/// The home volumes as they are now.
async fn homes_now(
    app: &AppState,
) -> Result<(crate::k8s::Kube, Vec<crate::components::homes::Home>), Problem> {
    let kube = kube_now(app)?;
    crate::waits::note(|| "the Kubernetes API server (the home volumes)".into());
    let homes = crate::components::homes::list(&kube, crate::components::NAMESPACE)
        .await
        .map_err(|e| kubernetes_unavailable(e.to_string()))?;
    Ok((kube, homes))
}

/// Every user's home volume: its owner, size, whether a server mounts it, and whether the owner
/// is still a member (the homes of removed users stay until an admin purges them).
#[utoipa::path(get, path = "/v1/homes", tag = "users", responses(
    (status = 200, body = HomesPage),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "Kubernetes is not up yet, or did not answer")
))]
pub async fn list_homes(Extract(app): Extract<AppState>) -> Result<Json<HomesPage>, Problem> {
    let (_, homes) = homes_now(&app).await?;
    let state = app.state.clone();
    let owners: Vec<String> = homes.iter().map(|h| h.user.to_lowercase()).collect();
    let members = blocking(move || {
        owners
            .iter()
            .map(|name| state.user(name).map(|u| u.map(|u| u.state)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let listing = app.hub.listing();
    let homes = homes
        .into_iter()
        .zip(members)
        .map(|(home, member)| HomeView {
            last_activity: listing
                .as_ref()
                .and_then(|l| l.users.get(&home.user.to_lowercase()))
                .and_then(|u| u.last_activity.clone()),
            member,
            home,
        })
        .collect();
    Ok(Json(HomesPage { homes }))
}

#[derive(Deserialize, IntoParams)]
pub struct PurgeQuery {
    /// The claim's name again, to confirm.
    pub confirm: Option<String>,
}

/// Deletes the home volume of someone who is no longer a member, for good. Refused for an
/// active member's home, for one that a server mounts, and without `confirm` naming the claim.
#[utoipa::path(delete, path = "/v1/homes/{claim}", tag = "users", params(("claim" = String, Path), PurgeQuery), responses(
    (status = 200, body = AdminChange, description = "deleted"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "no such home volume"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "the owner is an active member, or a server mounts it"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "confirm does not name the claim"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "Kubernetes is not up yet, or did not answer")
))]
pub async fn purge_home(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(claim): Path<String>,
    Query(query): Query<PurgeQuery>,
) -> Result<Json<AdminChange>, Problem> {
    if query.confirm.as_deref() != Some(claim.as_str()) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirm-required",
            "Confirmation required",
            format!(
                "deleting a home volume cannot be undone: name it twice, ?confirm={claim} (pangeoctl home purge {claim} --confirm {claim})"
            ),
        )
        .with_field("confirm"));
    }
    let (kube, homes) = homes_now(&app).await?;
    let Some(home) = homes.into_iter().find(|h| h.claim == claim) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-home",
            "No such home volume",
            format!("{claim} is not a home volume (see pangeoctl homes)"),
        ));
    };
    let owner = home.user.to_lowercase();
    let state = app.state.clone();
    let member = {
        let owner = owner.clone();
        blocking(move || state.user(&owner)).await?
    };
    if member
        .as_ref()
        .is_some_and(|u| u.state == UserState::Active)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "home-of-a-member",
            "The owner is a member",
            format!(
                "{claim} is the home of {owner}, an active member: a member's home is never deleted; remove them from the users group in FreeIPA first"
            ),
        ));
    }
    if !home.mounted_by.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "home-in-use",
            "The home volume is in use",
            format!(
                "{claim} is mounted by {}; stop that server first",
                home.mounted_by.join(", ")
            ),
        ));
    }
    crate::components::homes::purge(&kube, crate::components::NAMESPACE, &claim)
        .await
        .map_err(|e| kubernetes_unavailable(e.to_string()))?;
    let state = app.state.clone();
    let who = actor.0.clone();
    let details = serde_json::json!({
        "claim": claim, "user": owner, "capacity": home.capacity,
        "member": member.map(|u| u.state.as_str()),
    });
    let _ = blocking(move || state.record_event(&who, "home.purged", details)).await;
    tracing::warn!(actor = %actor.0, %claim, user = %owner, "a home volume was purged by an admin");
    Ok(Json(AdminChange {
        user: owner,
        changed: true,
    }))
}

/// Streams a copy of one home volume as a zstd-compressed tar (`pangeoctl home export CLAIM >
/// CLAIM.tar.zst`), while the appliance and the owner's server keep running. The home is
/// mounted read-only in a pod of pangeod's own (the notebook image), which is deleted when the
/// export ends. A copy that fails part-way ends the response with an error, never with a
/// well-formed but short archive. Event `home.exported` (or `home.export-failed`).
#[utoipa::path(get, path = "/v1/homes/{claim}/export", tag = "users", params(("claim" = String, Path)), responses(
    (status = 200, content_type = "application/zstd", body = Vec<u8>, description = "a tar of the home, zstd-compressed, streamed"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "no such home volume"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "Kubernetes is not up yet or did not answer, or the export pod did not start")
))]
pub async fn export_home(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Path(claim): Path<String>,
) -> Result<axum::response::Response, Problem> {
    let (kube, homes) = homes_now(&app).await?;
    let Some(home) = homes.into_iter().find(|h| h.claim == claim) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-home",
            "No such home volume",
            format!("{claim} is not a home volume (see pangeoctl homes)"),
        ));
    };
    let image = format!(
        "{}:{}",
        crate::components::values::NOTEBOOK_IMAGE_NAME,
        crate::components::values::NOTEBOOK_IMAGE_TAG
    );
    crate::waits::note(|| format!("the export pod of {claim} (starting)"));
    let export =
        crate::components::homes::start_export(&kube, crate::components::NAMESPACE, &home, &image)
            .await
            .map_err(|error| match error {
                crate::components::homes::ExportError::NotStarted { .. } => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "export-not-started",
                    "The export could not start",
                    error.to_string(),
                ),
                other => kubernetes_unavailable(other.to_string()),
            })?;
    tracing::info!(actor = %actor.0, %claim, pod = export.pod.name(), "exporting a home volume");
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::spawn(stream_export(app.clone(), actor, home, export, sender));
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ));
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/zstd")
        .header(
            axum::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{claim}.tar.zst\""),
        )
        .body(body)
        .map_err(|e| Problem::internal(e.to_string()))
}

type ExportChunk = Result<axum::body::Bytes, std::io::Error>;

/// Compresses tar's output into the response as it comes. The last piece (the end of the zstd
/// frame) is held back until tar has said it succeeded, so a failed copy never decompresses as
/// a whole archive; the pod goes when this ends.
async fn stream_export(
    app: AppState,
    actor: Actor,
    home: crate::components::homes::Home,
    mut export: crate::components::homes::Export,
    sender: tokio::sync::mpsc::Sender<ExportChunk>,
) {
    use tokio::io::AsyncReadExt;
    let outcome: Result<(u64, i32), String> = async {
        let stdout = export
            .process
            .stdout()
            .ok_or("the exec gave no output stream")?;
        let stderr = export.process.stderr();
        let status = export
            .process
            .take_status()
            .ok_or("the exec gave no status")?;
        // tar's messages, read to the end (a stream left unread would stall the exec's other
        // streams) and the first 4 KiB kept for the error and the event.
        let messages = tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(mut stderr) = stderr {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let room = 4096usize.saturating_sub(text.len());
                    text.extend_from_slice(&buffer[..n.min(room)]);
                }
            }
            String::from_utf8_lossy(&text).trim().to_string()
        });
        let mut encoder = async_compression::tokio::bufread::ZstdEncoder::new(
            tokio::io::BufReader::with_capacity(64 * 1024, stdout),
        );
        let mut sent = 0u64;
        let mut held: Option<axum::body::Bytes> = None;
        loop {
            let mut buffer = vec![0u8; 64 * 1024];
            let n = encoder
                .read(&mut buffer)
                .await
                .map_err(|e| format!("reading tar's output: {e}"))?;
            if n == 0 {
                break;
            }
            buffer.truncate(n);
            if let Some(previous) = held.replace(buffer.into()) {
                sent += previous.len() as u64;
                sender
                    .send(Ok(previous))
                    .await
                    .map_err(|_| "the client went away".to_string())?;
            }
        }
        let code = crate::components::homes::exit_code(status.await.as_ref());
        let messages = messages.await.unwrap_or_default();
        match code {
            Some(code @ (0 | 1)) => {
                if let Some(last) = held {
                    sent += last.len() as u64;
                    sender
                        .send(Ok(last))
                        .await
                        .map_err(|_| "the client went away".to_string())?;
                }
                Ok((sent, code))
            }
            other => Err(format!(
                "tar failed ({}){}",
                other.map_or("no exit status".to_string(), |c| format!("exit {c}")),
                if messages.is_empty() {
                    String::new()
                } else {
                    format!(": {messages}")
                }
            )),
        }
    }
    .await;
    let pod = export.pod.name().to_string();
    drop(export);
    let (action, details) = match &outcome {
        Ok((bytes, code)) => (
            "home.exported",
            serde_json::json!({
                "claim": home.claim, "user": home.user, "bytes": bytes, "pod": pod,
                "files_changed_while_read": *code == 1,
            }),
        ),
        Err(reason) => {
            let _ = sender
                .send(Err(std::io::Error::other(format!(
                    "the export of {} failed: {reason}",
                    home.claim
                ))))
                .await;
            (
                "home.export-failed",
                serde_json::json!({ "claim": home.claim, "user": home.user, "reason": reason, "pod": pod }),
            )
        }
    };
    match &outcome {
        Ok((bytes, _)) => {
            tracing::info!(actor = %actor.0, claim = %home.claim, bytes, "home exported");
        }
        Err(reason) => {
            tracing::warn!(actor = %actor.0, claim = %home.claim, %reason, "home export failed");
        }
    }
    let state = app.state.clone();
    let who = actor.0;
    let _ = tokio::task::spawn_blocking(move || state.record_event(&who, action, details)).await;
}
