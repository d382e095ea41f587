//! Prometheus metrics: request counts by route and status, plus the boot state.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pangeod_http_requests_total Admin API requests by route and status."
        );
        let _ = writeln!(out, "# TYPE pangeod_http_requests_total counter");
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "pangeod_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        drop(requests);
        let _ = writeln!(
            out,
            "# HELP pangeod_kubernetes_requests_total Requests made of the Kubernetes API, by the admin API route whose handler made them, or background."
        );
        let _ = writeln!(out, "# TYPE pangeod_kubernetes_requests_total counter");
        for (caller, count) in crate::k8s::count::request_counts() {
            let _ = writeln!(
                out,
                "pangeod_kubernetes_requests_total{{caller=\"{caller}\"}} {count}"
            );
        }
    }
}

pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let caller = format!("{method} {route}");
    let response = crate::k8s::count::as_caller(caller, next.run(request)).await;
    let key = (method, route, response.status().as_u16());
    *metrics
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
    response
}
