//! The admin API. It owns no state: handlers read the boot status and the config through
//! watch channels, and hand changes to the boot runner and the state module.

pub mod auth;
mod body;
mod listen;
mod metrics;
mod patch_schema;
mod problem;
mod routes;
#[cfg(test)]
pub(crate) use patch_schema::{dn_schema, server_schema, user_name_schema};
mod users;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;

use crate::boot::BootHandle;
use crate::state::State;

pub use listen::{HEADER_TIMEOUT, ListenError, bind_socket, bind_tcp, serve_tls, serve_unix};
pub use metrics::Metrics;
pub use problem::Problem;

/// Request bodies larger than this get 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// A request that takes longer than this gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What status shows about the TCP listener.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TcpListenerInfo {
    pub address: String,
    /// SHA-256 fingerprint of the listener's certificate.
    pub tls_fingerprint: String,
    /// The local CA that signed a generated certificate, for clients to trust.
    pub ca_file: Option<String>,
    pub token_file: String,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub boot: BootHandle,
    pub k3s: crate::k3s::K3sRuntime,
    pub components: crate::components::Tracker,
    pub directory: crate::directory::DirectorySync,
    pub hub: crate::hub::HubSync,
    pub state: Arc<State>,
    pub config_path: PathBuf,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    pub tcp: Option<TcpListenerInfo>,
    /// Config changes are applied one at a time.
    pub patch_lock: Arc<tokio::sync::Mutex<()>>,
    /// The cluster and the k3s process as status shows them, read in the background.
    pub cluster: view::ClusterView,
}

/// The routes, with their OpenAPI document generated from the same handler definitions.
pub fn router(app: AppState) -> Router {
    let (router, openapi) = routes::router().split_for_parts();
    #[cfg(feature = "fault-injection")]
    let router = router.route(
        "/v1/debug/hang",
        axum::routing::post(|| async {
            *crate::driver::HANG
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(crate::boot::LOOP_NAME.to_string());
            "the boot runner will hang; the watchdog should restart pangeod"
        }),
    );
    let openapi = Arc::new(openapi);
    let metrics = app.metrics.clone();
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(routes::not_found)
        .with_state(app)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn(problem::problemize))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// Ends a request that outlives [`REQUEST_TIMEOUT`] with 504, naming what it waited on (see
/// [`crate::waits`]). The systems called from requests have shorter timeouts of their own, so
/// this is the last resort, and what it names is where to look.
async fn deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let what = format!("{} {}", request.method(), request.uri().path());
    match crate::waits::within(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(waiting_on) => {
            let on = waiting_on.unwrap_or_else(|| "pangeod itself".into());
            tracing::warn!(request = %what, waiting_on = %on, "an API request outlived its deadline");
            problem::Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "Request timed out",
                format!(
                    "{what} did not finish within {}s: it was waiting on {on}, which is slow or down; anything it finished is kept, and pangeoctl status shows that system's state",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
            .into_response()
        }
    }
}

/// The OpenAPI document, as served on `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::router().split_for_parts().1
}
