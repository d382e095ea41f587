//! `cargo bench --bench api_latency`: the admin API under load, against the release pangeod.
//!
//! 1. Baseline: p50/p99 of `GET /v1/status` over the unix socket on an idle daemon.
//! 2. The same while a burst of 1,000 `PATCH /v1/config` runs (each a real change: a new
//!    revision, fsynced, and a reload), in parallel.
//! 3. pangeod's RSS when idle after start, and after the burst.
//!
//! Prints a Markdown table for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use pangeod::client;

const SAMPLES: usize = 2000;
const PATCHES: u32 = 1000;

fn main() {
    // The tests' temp dir and config (no Kubernetes, no reachable directory).
    let daemon = common::TestDaemon::new("");
    let (dir, config) = (&daemon.dir, daemon.config_path());
    let socket = dir.path().join("run/admin.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pangeod"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Config and preflight done (no FreeIPA runs here, so the sync step fails).
            let booted = client::request(
                &socket,
                Method::GET,
                "/v1/status",
                &[],
                None,
                Duration::from_secs(1),
            )
            .await
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|s| s["steps"][1]["state"] == "done");
            if booted {
                break;
            }
            assert!(Instant::now() < deadline, "pangeod did not boot");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = rss_kib(child.id());

    let baseline = rt.block_on(common::timing::status_latencies(&socket, SAMPLES));

    let (under_load, patch_time, patched) = rt.block_on(common::timing::status_during_patches(
        socket.clone(),
        PATCHES,
    ));
    let rss_after = rss_kib(child.id());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();

    common::timing::print_status_rows(baseline, under_load, &format!("{patched} PATCH /v1/config"));
    println!(
        "| {patched} PATCHes (each a fsynced revision) took | {:.2} s ({:.0} per s) |",
        patch_time.as_secs_f64(),
        f64::from(patched) / patch_time.as_secs_f64()
    );
    println!(
        "| RSS idle after start / after the burst | {:.1} / {:.1} MiB |",
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
