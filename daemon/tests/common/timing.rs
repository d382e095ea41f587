//! Latency samples for the benches (`daemon/benches/` include this module tree with `#[path]`).

use std::path::{Path, PathBuf};
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

/// `count` status requests over the socket, each in milliseconds.
pub async fn status_latencies(socket: &Path, count: usize) -> Vec<f64> {
    let transport = client::Transport::unix(socket).unwrap();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        samples.push(status_ms(&transport).await);
    }
    samples
}

/// `status_latencies` sampled while `count` `PATCH /v1/config` run one after another, each a
/// real change (`notebook.storage_gb` 11, 12, ...: a new revision, fsynced, and a reload).
/// Returns the samples, how long the PATCHes took and how many were acknowledged.
pub async fn status_during_patches(socket: PathBuf, count: u32) -> (Vec<f64>, Duration, u32) {
    let writer_socket = socket.clone();
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        let mut ok = 0u32;
        for i in 0..count {
            let body = format!(r#"{{"notebook": {{"storage_gb": {}}}}}"#, 11 + i);
            let response = client::request(
                &writer_socket,
                Method::PATCH,
                "/v1/config",
                &[("content-type", "application/json")],
                Some(body.into_bytes()),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
            assert_eq!(response.status, 200, "{:?}", response.body);
            ok += 1;
        }
        (started.elapsed(), ok)
    });
    let mut samples = Vec::new();
    while !writer.is_finished() {
        samples.extend(status_latencies(&socket, 50).await);
    }
    let (elapsed, ok) = writer.await.unwrap();
    (samples, elapsed, ok)
}

/// The table's head and its status rows: idle, under `load`, and the p99 ratio of the two.
pub fn print_status_rows(baseline: Vec<f64>, under_load: Vec<f64>, load: &str) {
    let (idle_n, n) = (baseline.len(), under_load.len());
    let (b50, b99, bmax) = percentiles(baseline);
    let (l50, l99, lmax) = percentiles(under_load);
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| GET /v1/status idle, {idle_n} requests: p50 / p99 / max | {b50:.2} / {b99:.2} / {bmax:.2} ms |"
    );
    println!(
        "| GET /v1/status during {load}, {n} requests: p50 / p99 / max | {l50:.2} / {l99:.2} / {lmax:.2} ms |"
    );
    println!("| p99 ratio, under load / idle | {:.2} |", l99 / b99);
}
