//! Routes. Each handler translates HTTP into a call on the boot runner or the state module.

use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;

use crate::boot::{BootStatus, Phase};

use super::{AppState, Problem};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/v1/status", get(status))
        .fallback(not_found)
}

#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize)]
pub struct Ready {
    pub ready: bool,
}

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

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub summary: String,
    pub hub_url: Option<String>,
    #[serde(flatten)]
    pub boot: BootStatus,
}

async fn status(Extract(app): Extract<AppState>) -> Json<Status> {
    let boot = app.boot.status.borrow().clone();
    let hub_url = app.boot.config.borrow().as_ref().map(|c| c.hub_url());
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: app.started.elapsed().as_secs(),
        summary: boot.summary(),
        hub_url,
        boot,
    })
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
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
