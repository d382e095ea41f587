//! Routes. Each handler translates HTTP into a call on the boot runner or the state module;
//! `#[utoipa::path]` beside each keeps the OpenAPI document generated from the code.

use axum::Extension;
use axum::extract::{Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::boot::{BootStatus, PatchError, Phase, StepState, apply_config_patch};
use crate::state::Event;

use super::auth::Actor;
use super::body::JsonBody;
use super::{AppState, Problem, TcpListenerInfo};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pangeod admin API",
        description = "The Pangeo appliance's admin API. Errors are application/problem+json with a stable `type` (urn:pangeod:problem:<code>).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(status))
        .routes(routes!(get_config, patch_config))
        .routes(routes!(events))
        .routes(routes!(tls_ca))
        .routes(routes!(kubeconfig))
        .routes(routes!(metrics))
        .routes(routes!(super::users::list_users))
        .routes(routes!(super::users::get_user))
        .routes(routes!(
            super::users::start_server,
            super::users::stop_server
        ))
        .routes(routes!(super::users::dask_clusters))
        .routes(routes!(super::users::list_homes))
        .routes(routes!(super::users::purge_home))
        .routes(routes!(super::users::export_home))
        .routes(routes!(super::users::sync_overview, super::users::sync_now))
        .routes(routes!(super::users::confirm_sync))
        .routes(routes!(
            super::users::grant_admin,
            super::users::revoke_admin
        ))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// The daemon is alive (not: the platform is ready).
#[utoipa::path(get, path = "/v1/health", tag = "status", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

/// The platform is ready: every boot step is done. Otherwise 503 with the reason.
#[utoipa::path(get, path = "/v1/ready", tag = "status", responses(
    (status = 200, body = Ready),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "not ready; `detail` says why")
))]
async fn ready(Extract(app): Extract<AppState>) -> Result<Json<Ready>, Problem> {
    let status = app.boot.status.borrow().clone();
    if status.phase == Phase::Ready {
        Ok(Json(Ready { ready: true }))
    } else {
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Platform not ready",
            status.summary(),
        ))
    }
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    /// One line, as in systemd's STATUS=.
    pub summary: String,
    pub hub_url: Option<String>,
    #[serde(flatten)]
    pub boot: BootStatus,
    /// Each chart: rendered, applied (generation), helm-controller's job, the error.
    pub components: Vec<crate::components::ComponentStatus>,
    /// k3s: the mode, the process, the bundle, the API server version and the node's conditions.
    pub k3s: crate::k3s::K3sStatus,
    pub directory: crate::directory::SyncStatus,
    /// The hub sync: the hub's API and version, the last run and its error.
    pub hub: crate::hub::HubStatus,
    /// Each release's workloads and whether all are rolled out (updated and ready); null
    /// until Kubernetes is up.
    pub rollouts: Option<Rollouts>,
    /// How many more notebook servers fit on the node (each guaranteed its CPUs and RAM);
    /// null until Kubernetes is up.
    pub notebook_capacity: Option<crate::components::capacity::Capacity>,
    /// Why the capacity could not be read.
    pub notebook_capacity_error: Option<String>,
    /// When `k3s.process` was read (in the background, at most 5 s before a status request
    /// sets off the next reading); null before the first. `rollouts` and `notebook_capacity`
    /// are as current as the watches behind them.
    pub cluster_read_at: Option<String>,
    /// The TCP listener for the portal, when configured.
    pub api_listener: Option<TcpListenerInfo>,
    /// `ok`, or `degraded` while something needs an admin although the boot steps are done
    /// (`degraded_reasons` says what, each naming the system and the fix).
    pub health: HealthState,
    pub degraded_reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Degraded,
}

/// What needs an admin now: a full state disk, a refused reload, a directory or hub sync that
/// keeps failing. Each from state pangeod already holds (one statvfs, no request).
fn degraded_reasons(
    app: &AppState,
    boot: &crate::boot::BootStatus,
    directory: &crate::directory::SyncStatus,
    hub: &crate::hub::HubStatus,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(problem) = app.state.disk_problem() {
        reasons.push(problem);
    }
    if let Some(error) = &boot.reload_error {
        reasons.push(format!("the last config reload was refused: {error}"));
    }
    if let Some(error) = &directory.last_error {
        reasons.push(format!("the directory sync is failing: {error}"));
    }
    if let Some(pending) = &directory.pending {
        reasons.push(format!(
            "the directory's removals are held since {}: {} active users are missing from its answer (active users {} -> {}); they keep their access until `pangeoctl sync --confirm` (POST /v1/sync/confirm) confirms the removals, if they are meant; additions, disables and admin changes are applied meanwhile",
            pending.found_at,
            pending.would_remove,
            pending.active_before,
            pending.active_after,
        ));
    }
    if let Some(error) = hub.last_error.as_ref().filter(|_| !hub.waiting_for_install) {
        reasons.push(format!("the hub sync is failing: {error}"));
    }
    let listed = |names: Vec<String>| {
        let more = names.len().saturating_sub(5);
        let mut text = names.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text
    };
    if !directory.skipped.is_empty() {
        reasons.push(format!(
            "{} member(s) of the users group cannot log in, as no hub can hold their user name (rename them in FreeIPA): {}",
            directory.skipped.len(),
            listed(
                directory
                    .skipped
                    .iter()
                    .map(|s| format!("{:?}: {}", s.uid, s.reason))
                    .collect()
            )
        ));
    }
    if let Some(report) = hub.last_report.as_ref().filter(|r| !r.refused.is_empty()) {
        reasons.push(format!(
            "the hub refused to create {} member(s); the others were created: {}",
            report.refused.len(),
            listed(
                report
                    .refused
                    .iter()
                    .map(|(name, why)| format!("{name:?}: {why}"))
                    .collect()
            )
        ));
    }
    reasons
}

pub(super) type Rollouts = std::collections::BTreeMap<String, crate::components::rollout::Rollout>;

/// What status reads from Kubernetes, both at once and each bounded at 3 s: the releases'
/// rollouts, and the notebook capacity (or why it could not be read).
/// Boot steps, the overall phase, version, uptime and components.
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, body = Status)))]
async fn status(Extract(app): Extract<AppState>) -> Json<Status> {
    let boot = app.boot.status.borrow().clone();
    let config = app.boot.config.borrow().clone();
    let hub_url = config.as_ref().map(|c| c.hub_url());
    // The cluster and the k3s process as last read in the background: no request here.
    let reading = app.cluster.current(&app.k3s, config.as_deref());
    let mut k3s = app.k3s.snapshot_without_process();
    k3s.process = reading.process.clone();
    let directory = app.directory.status().borrow().clone();
    let hub = app.hub.status();
    let degraded_reasons = degraded_reasons(&app, &boot, &directory, &hub);
    let health = if degraded_reasons.is_empty() {
        HealthState::Ok
    } else {
        HealthState::Degraded
    };
    Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: app.started.elapsed().as_secs(),
        summary: boot.summary(),
        hub_url,
        boot,
        components: app.components.list(),
        api_listener: app.tcp.clone(),
        k3s,
        degraded_reasons,
        health,
        directory,
        hub,
        rollouts: reading.rollouts,
        notebook_capacity: reading.capacity,
        notebook_capacity_error: reading.capacity_error,
        cluster_read_at: reading.read_at,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    /// The config revision in force.
    pub revision: i64,
    /// False when a PATCH changed nothing.
    pub changed: bool,
    /// The effective config. Secrets are never inline: only the paths of their files appear.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The keys set through this API, applied over the files.
    #[schema(value_type = Object)]
    pub overlay: serde_json::Value,
}

/// The config in force, secrets redacted.
#[utoipa::path(get, path = "/v1/config", tag = "config", responses(
    (status = 200, body = ConfigView),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "no valid config yet")
))]
async fn get_config(Extract(app): Extract<AppState>) -> Result<Json<ConfigView>, Problem> {
    let state = app.state.clone();
    let latest = tokio::task::spawn_blocking(move || state.latest_config_revision())
        .await
        .map_err(|e| Problem::internal(e.to_string()))??;
    let summary = app.boot.status.borrow().summary();
    let Some(latest) = latest else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config-invalid",
            "No valid config yet",
            summary,
        ));
    };
    Ok(Json(ConfigView {
        revision: latest.id,
        changed: false,
        config: latest.effective,
        overlay: latest.overlay,
    }))
}

/// Changes updatable keys (JSON merge patch). Validated with the same rules as the files,
/// stored as a revision, recorded as an event, and applied.
#[utoipa::path(patch, path = "/v1/config", tag = "config",
    request_body(content = super::patch_schema::ConfigPatch, content_type = "application/json"),
    responses(
        (status = 200, body = ConfigView),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "malformed JSON, with the position"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "refused by the state in force: a locked or file-only key, a shrink of the homes, a config that changed meanwhile, a new directory destination without its password, or new directory settings the directory does not accept"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "unknown key or bad value; `field` names it"),
    )
)]
async fn patch_config(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(patch): JsonBody,
) -> Result<Json<ConfigView>, Problem> {
    let _one_at_a_time = app.patch_lock.lock().await;
    let state = app.state.clone();
    let config_path = app.config_path.clone();
    let who = actor.0.clone();
    // The directory check runs on this blocking thread, on the runtime's I/O.
    let runtime = tokio::runtime::Handle::current();
    let check = move |config: &crate::config::Config| {
        runtime.block_on(crate::directory::check_settings(config))
    };
    if patch.get("freeipa").is_some() {
        crate::waits::note(|| "the directory server, checking the new freeipa settings".into());
    }
    let outcome = tokio::task::spawn_blocking(move || {
        apply_config_patch(&config_path, &state, &who, &patch, &check)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(patch_problem)?;
    if outcome.changed {
        tracing::info!(actor = %actor.0, revision = outcome.revision, "config changed through the API");
        app.boot.request_reload(&actor.0);
    }
    Ok(Json(ConfigView {
        revision: outcome.revision,
        changed: outcome.changed,
        config: outcome.config,
        overlay: outcome.overlay,
    }))
}

fn patch_problem(error: PatchError) -> Problem {
    let key = error.key().map(str::to_string);
    let detail = error.to_string();
    let problem = match error {
        PatchError::State(error @ crate::state::StateError::RevisionConflict { .. }) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "config-conflict",
                "The config changed during this request",
                format!("{error}; send the request again"),
            );
        }
        PatchError::State(error) => return Problem::from(error),
        PatchError::Immutable { .. } => Problem::new(
            StatusCode::CONFLICT,
            "immutable-key",
            "Key cannot be changed",
            detail,
        ),
        PatchError::FileOnly { .. } => Problem::new(
            StatusCode::CONFLICT,
            "file-only-key",
            "Key is set in the config files only",
            detail,
        ),
        PatchError::PlainTls => Problem::new(
            StatusCode::CONFLICT,
            "file-only-value",
            "Value is set in the config files only",
            detail,
        ),
        // The body is valid; the directory (the state of another system) refuses it.
        PatchError::Directory { .. } => Problem::new(
            StatusCode::CONFLICT,
            "directory-check-failed",
            "The directory did not accept the new settings",
            detail,
        ),
        // Whether a password must come depends on the settings in force (the same server
        // needs none), so the schema cannot say it: a conflict with that state.
        PatchError::NeedsPassword { .. } => Problem::new(
            StatusCode::CONFLICT,
            "password-required",
            "The directory's password must come with this change",
            detail,
        ),
        PatchError::Credential(crate::boot::credentials::CredentialError::Write { .. }) => {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state-unwritable",
                "The credential cannot be stored",
                detail,
            )
        }
        PatchError::Credential(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-config",
            "Invalid config value",
            detail,
        ),
        PatchError::Shrink { .. } => Problem::new(
            StatusCode::CONFLICT,
            "storage-shrink",
            "Home volumes cannot shrink",
            detail,
        ),
        PatchError::FilesBroken(_) => Problem::new(
            StatusCode::CONFLICT,
            "config-files-invalid",
            "The config files are invalid",
            detail,
        ),
        PatchError::Shape { .. } | PatchError::Invalid(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-config",
            "Invalid config value",
            detail,
        ),
    };
    match key {
        Some(key) => problem.with_field(key),
        None => problem,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Return events older than this id (from `next_before` of the previous page).
    before: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// The event log: who changed what, and when. Newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery), responses(
    (status = 200, body = EventsPage),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "a parameter is not a number"),
    (status = 422, body = Problem, content_type = "application/problem+json")
))]
async fn events(
    Extract(app): Extract<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventsPage>, Problem> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-parameter",
            "Invalid parameter",
            "limit must be from 1 to 500",
        )
        .with_field("limit"));
    }
    let state = app.state.clone();
    let events = tokio::task::spawn_blocking(move || state.events(query.before, limit))
        .await
        .map_err(|e| Problem::internal(e.to_string()))??;
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(EventsPage {
        events,
        next_before,
    }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "status", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(Extract(app): Extract<AppState>) -> Response {
    use std::fmt::Write;
    let boot = app.boot.status.borrow().clone();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP pangeod_info The running pangeod.\n# TYPE pangeod_info gauge"
    );
    let _ = writeln!(
        out,
        "pangeod_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP pangeod_uptime_seconds Seconds since pangeod started.\n# TYPE pangeod_uptime_seconds gauge"
    );
    let _ = writeln!(
        out,
        "pangeod_uptime_seconds {}",
        app.started.elapsed().as_secs()
    );
    let _ = writeln!(
        out,
        "# HELP pangeod_ready 1 when every boot step is done.\n# TYPE pangeod_ready gauge"
    );
    let _ = writeln!(
        out,
        "pangeod_ready {}",
        u8::from(boot.phase == Phase::Ready)
    );
    let _ = writeln!(
        out,
        "# HELP pangeod_boot_step_state The state of each boot step (1 for the current state).\n# TYPE pangeod_boot_step_state gauge"
    );
    for step in &boot.steps {
        for state in [
            StepState::Pending,
            StepState::Running,
            StepState::Done,
            StepState::Failed,
        ] {
            let name = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "pangeod_boot_step_state{{step=\"{}\",state=\"{name}\"}} {}",
                step.name,
                u8::from(step.state == state)
            );
        }
    }
    if let Some(revision) = boot.config_revision {
        let _ = writeln!(
            out,
            "# HELP pangeod_config_revision The config revision in force.\n# TYPE pangeod_config_revision gauge"
        );
        let _ = writeln!(out, "pangeod_config_revision {revision}");
    }
    app.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such route",
        format!(
            "{} is not a route of this API; see /v1/openapi.json",
            uri.path()
        ),
    )
}

#[derive(Deserialize, IntoParams)]
pub struct KubeconfigQuery {
    /// How long the kubeconfig's token is valid, in hours (1 to 168; default 24).
    #[param(minimum = 1, maximum = 168)]
    pub hours: Option<u32>,
}

/// A kubeconfig for the cluster, for the tenancy's admins: a dedicated identity
/// (ServiceAccount `kube-system/pangeo-cluster-admin`, bound to `cluster-admin`) with a token of
/// its own that expires, the external IP as the server, and the cluster's CA. Each call issues
/// a new token and records an event (never the token).
#[utoipa::path(get, path = "/v1/kubeconfig", tag = "status", params(KubeconfigQuery), responses(
    (status = 200, body = String, content_type = "application/yaml"),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "hours is not a number"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "hours out of range"),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "Kubernetes is not up yet, or did not answer")
))]
async fn kubeconfig(
    Extract(app): Extract<AppState>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<KubeconfigQuery>,
) -> Result<Response, Problem> {
    use crate::admin_kubeconfig::{DEFAULT_HOURS, MAX_HOURS};
    let hours = query.hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-parameter",
            "Invalid parameter",
            format!("hours must be from 1 to {MAX_HOURS} (a week)"),
        )
        .with_field("hours"));
    }
    use super::users::{kube_now, kubernetes_unavailable as unavailable};
    let config =
        app.boot.config.borrow().clone().ok_or_else(|| {
            unavailable("there is no valid config yet; see pangeoctl status".into())
        })?;
    let kube = kube_now(&app)?;
    crate::waits::note(|| "the Kubernetes API server (the admin identity and its token)".into());
    let issued = crate::admin_kubeconfig::issue(&kube, &config, hours)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let state = app.state.clone();
    let details = serde_json::json!({
        "identity": format!("{}/{}", crate::admin_kubeconfig::NAMESPACE, crate::admin_kubeconfig::SERVICE_ACCOUNT),
        "server": issued.server,
        "expires_at": issued.expires_at,
    });
    let who = actor.0.clone();
    let _ =
        tokio::task::spawn_blocking(move || state.record_event(&who, "kubeconfig.issued", details))
            .await;
    tracing::info!(actor = %actor.0, expires_at = %issued.expires_at, "a kubeconfig was issued");
    Ok(([(header::CONTENT_TYPE, "application/yaml")], issued.yaml).into_response())
}

/// The local CA that signed the hub's certificate, for browsers and clients to trust (a domain
/// that is not public; a public one has a Let's Encrypt certificate and no local CA).
#[utoipa::path(get, path = "/v1/tls/ca.pem", tag = "status", responses(
    (status = 200, body = String, content_type = "application/x-pem-file"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "no local CA: the domain is public (Let's Encrypt), or the components step has not run yet")
))]
async fn tls_ca(Extract(app): Extract<AppState>) -> Result<Response, Problem> {
    let state = app.state.clone();
    let ca = tokio::task::spawn_blocking(move || {
        state.stored_secret(crate::components::ingress::CA_CERT)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))??;
    match ca {
        Some(pem) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
            pem,
        )
            .into_response()),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-local-ca",
            "No local CA",
            "the hub has no certificate from a local CA: a public domain gets one from Let's Encrypt, and otherwise the CA is made by the components step (see pangeoctl status)",
        )),
    }
}
