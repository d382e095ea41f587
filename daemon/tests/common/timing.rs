//! Latency samples for the benches (`daemon/benches/` include this module tree with `#[path]`).

use std::time::{Duration, Instant};

use hyper::Method;
use pangeod::client;

/// One `GET /v1/status` over `transport`, in milliseconds; it must answer 200.
pub async fn status_ms(transport: &client::Transport) -> f64 {
    let started = Instant::now();
    let response = client::call(
        transport,
        Method::GET,
        "/v1/status",
        &[],
        None,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    started.elapsed().as_secs_f64() * 1000.0
}

/// p50, p99 and the maximum of `samples`.
pub fn percentiles(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99), *samples.last().unwrap())
}
