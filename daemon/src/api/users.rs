//! Users, directory sync and admins.

use axum::Extension;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::directory::{SyncReport, SyncStatus};
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
    pub users: Vec<UserRecord>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::state::StateError> + Send + 'static,
) -> Result<T, Problem> {
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
    Ok(Json(UsersPage { users, next_after }))
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
            let _ = app.state.record_event(
                &actor.0,
                "sync.confirmed",
                serde_json::json!({ "run": report.run.id }),
            );
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
