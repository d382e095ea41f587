//! `cargo bench --bench status_load`: `GET /v1/status` while the daemon is busy, on the real
//! fixtures: pangeod in `k3s.mode = "external"` on the test control plane
//! (`CONTROLPLANE_WORKDIR`) with the 389-ds fixture as its directory (`LDAP_WORKDIR`).
//!
//! 1. Baseline: p50/p99 of status over the unix socket on the idle, booted daemon.
//! 2. The same while 1,000 `PATCH /v1/config` run (each a real change: a new revision,
//!    fsynced, and a reload that re-applies the components to the API server) and, beside them,
//!    directory syncs run back to back (`POST /v1/sync`).
//! 3. The Kubernetes requests pangeod made meanwhile, by caller (`/metrics`,
//!    `pangeod_kubernetes_requests_total`): those of status requests must be zero.
//!
//! Without the fixtures it says so and exits 0. Prints a Markdown table for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use pangeod::client;

const SAMPLES: usize = 2000;
const PATCHES: u32 = 1000;
const STATUS: &str = "GET /v1/status";

fn main() {
    let (Some(cp), Some(ldap)) = (common::controlplane::controlplane(), common::ldap_env()) else {
        println!(
            "status_load skipped: needs the test control plane (CONTROLPLANE_WORKDIR) and the 389-ds fixture (LDAP_WORKDIR); see integration-tests/run"
        );
        return;
    };
    let mut daemon = common::controlplane::external_daemon(&cp, &ldap, &cp.kubeconfig());
    let socket = daemon.socket();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    daemon.wait_status_within("the platform booted", Duration::from_secs(120), |s| {
        s["phase"] == "ready" && s["rollouts"].is_object()
    });
    let before = rt.block_on(kube_requests(&socket));
    let baseline = rt.block_on(common::timing::status_latencies(&socket, SAMPLES));
    let after_idle = rt.block_on(kube_requests(&socket));

    let (under_load, patch_time, patched, syncs) = rt.block_on(async {
        // Directory syncs back to back, beside the PATCHes.
        let syncs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (sync_socket, count) = (socket.clone(), syncs.clone());
        let syncing = tokio::spawn(async move {
            loop {
                let response = client::request(
                    &sync_socket,
                    Method::POST,
                    "/v1/sync",
                    &[],
                    None,
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
                assert_eq!(response.status, 200, "{:?}", response.body);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let (samples, elapsed, ok) =
            common::timing::status_during_patches(socket.clone(), PATCHES).await;
        syncing.abort();
        (
            samples,
            elapsed,
            ok,
            syncs.load(std::sync::atomic::Ordering::SeqCst),
        )
    });
    let after_load = rt.block_on(kube_requests(&socket));
    daemon.stop();

    let delta = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str| {
        b.get(k).copied().unwrap_or(0) - a.get(k).copied().unwrap_or(0)
    };
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    common::timing::print_status_rows(
        baseline,
        under_load,
        &format!("{patched} PATCH /v1/config and back-to-back syncs"),
    );
    println!(
        "| {patched} PATCHes took / directory syncs run meanwhile | {:.2} s / {syncs} |",
        patch_time.as_secs_f64()
    );
    println!(
        "| Kubernetes requests made by status requests, idle / under load | {} / {} |",
        delta(&before, &after_idle, STATUS),
        delta(&after_idle, &after_load, STATUS)
    );
    println!(
        "| Kubernetes requests made by everything, idle / under load | {} / {} |",
        total(&after_idle) - total(&before),
        total(&after_load) - total(&after_idle)
    );
    assert_eq!(
        delta(&before, &after_load, STATUS),
        0,
        "status made Kubernetes requests: {after_load:?}"
    );
}

/// `pangeod_kubernetes_requests_total` by caller.
async fn kube_requests(socket: &std::path::Path) -> BTreeMap<String, u64> {
    let response = client::request(
        socket,
        Method::GET,
        "/metrics",
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|l| l.strip_prefix("pangeod_kubernetes_requests_total{caller=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(caller, n)| (caller.to_string(), n.parse().unwrap()))
        .collect()
}
