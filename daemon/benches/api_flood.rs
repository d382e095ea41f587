//! `cargo bench --bench api_flood`: the admin API while one allowed source floods the TLS
//! listener (issue 20, item 2).
//!
//! A release pangeod with its TLS listener on 127.0.0.1 and `admin_allowed_cidrs` 127.0.0.0/8.
//! 1. Baseline: p50/p99 of `GET /v1/status` by a fresh TLS client (new connection, handshake
//!    and token each time) from 127.0.0.1, and over the unix socket, on an idle daemon.
//! 2. The same while 3,000 connections from 127.0.0.2 are held open: 2,500 idle and 500
//!    trickling a byte every 200 ms, each reconnecting as soon as pangeod closes it. The flood
//!    is loopback only, bounded in time, and stops by itself.
//!
//! Prints a Markdown table for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use pangeod::client;

const SAMPLES: usize = 400;
const IDLE: usize = 2500;
const TRICKLING: usize = 500;

fn main() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();

    // The tests' temp dir and config, with the TLS listener open to loopback.
    let daemon = common::TestDaemon::new("");
    daemon.write_main(&common::TestDaemon::tcp_main_text("\"127.0.0.0/8\""));
    let (dir, config) = (&daemon.dir, daemon.config_path());
    let socket = dir.path().join("run/admin.sock");
    let log = std::fs::File::create(dir.path().join("pangeod.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pangeod"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = client::request(
                &socket,
                Method::GET,
                "/v1/status",
                &[],
                None,
                Duration::from_secs(1),
            )
            .await
            .ok()
            .and_then(|r| r.json().ok());
            if let Some(address) = status
                .as_ref()
                .and_then(|s| s["api_listener"]["address"].as_str())
            {
                break address.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "pangeod did not start its listener"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let token = std::fs::read_to_string(dir.path().join("state/api-token")).unwrap();
    let token = token.trim().split_once(':').unwrap().1.to_string();
    let transport = client::Transport::tls(
        "localhost",
        port,
        &dir.path().join("state/tls/ca.pem"),
        Some(token),
    )
    .unwrap();

    let (tls_idle, unix_idle) = rt.block_on(measure(&transport, &socket));

    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let (tls_flood, unix_flood, open) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..IDLE + TRICKLING {
            tasks.push(tokio::spawn(hold(
                port,
                i >= IDLE,
                stop.clone(),
                connects.clone(),
            )));
        }
        // Let the flood reach its size.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let open = connects.load(Ordering::SeqCst);
        let (tls, unix) = measure(&transport, &socket).await;
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            let _ = task.await;
        }
        (tls, unix, open)
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("pangeod.log")).unwrap();
    let emfile = log.matches("Too many open files").count();
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("admin API connection") && l.contains("refused"))
        .count();

    let row = |name: &str, idle: Vec<f64>, flood: Vec<f64>| {
        let (i50, i99, _) = common::timing::percentiles(idle);
        let (f50, f99, fmax) = common::timing::percentiles(flood);
        println!(
            "| {name}: p50 / p99 idle | {i50:.2} / {i99:.2} ms | p50 / p99 / max in the flood | {f50:.2} / {f99:.2} / {fmax:.2} ms | p99 ratio {:.2} |",
            f99 / i99
        );
    };
    println!("| measurement | idle | | flood | | |");
    println!("|---|---|---|---|---|---|");
    row(
        "GET /v1/status, fresh TLS client + token",
        tls_idle,
        tls_flood,
    );
    row("GET /v1/status, unix socket", unix_idle, unix_flood);
    println!(
        "| flood: connections made from 127.0.0.2 in the first 3 s | {open} | pangeod's descriptors at the end | {fds} | \"Too many open files\" / refusal log lines | {emfile} / {refusal_lines} |"
    );
}

/// Keeps one flood connection open (idle, or trickling), reconnecting when pangeod closes it.
async fn hold(port: u16, trickle: bool, stop: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))
            .unwrap();
        let Ok(mut stream) = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        connects.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::SeqCst) {
            if trickle {
                if stream.write_all(&[0x16]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                let read =
                    tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    break;
                }
            }
        }
        // Closed by pangeod: come back after a moment, as a flood does.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(transport: &client::Transport, socket: &std::path::Path) -> (Vec<f64>, Vec<f64>) {
    let unix_socket = client::Transport::unix(socket).unwrap();
    let mut tls = Vec::with_capacity(SAMPLES);
    let mut unix = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        tls.push(common::timing::status_ms(transport).await);
        unix.push(common::timing::status_ms(&unix_socket).await);
    }
    (tls, unix)
}
