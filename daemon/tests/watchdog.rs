//! READY, STATUS and the watchdog as systemd sees them: the test plays systemd's notify socket.
//! Needs the test-only hang route: `cargo test -p pangeod --features fault-injection --test watchdog`.
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::TestDaemon;

fn messages_until(
    socket: &UnixDatagram,
    deadline: Instant,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = stop(&message);
            seen.push(message);
            if done {
                break;
            }
        }
    }
    seen
}

#[test]
fn ready_comes_first_and_the_watchdog_stops_when_a_loop_hangs() {
    let mut daemon = TestDaemon::new("");
    let notify_path = daemon.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = daemon.command();
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000");
    daemon.child = Some(command.spawn().unwrap());

    // READY=1 arrives once the socket is bound, long before the platform is ready.
    let first = messages_until(&notify, Instant::now() + Duration::from_secs(20), |m| {
        m.contains("READY=1")
    });
    assert!(
        first.last().unwrap().starts_with("READY=1\nSTATUS="),
        "{first:?}"
    );
    // STATUS follows the boot steps, and the watchdog is pinged.
    let pings = messages_until(&notify, Instant::now() + Duration::from_secs(4), |_| false);
    assert!(pings.iter().any(|m| m == "WATCHDOG=1"), "{pings:?}");
    assert!(
        pings
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("config"))
            || first.iter().any(|m| m.contains("config")),
        "{first:?} {pings:?}"
    );

    let response = daemon.request(hyper::Method::POST, "/v1/debug/hang", &[], None);
    assert_eq!(response.status, 200);
    // Within the 2 s limit (plus a ping interval) the pings stop and status names the loop.
    let after = messages_until(&notify, Instant::now() + Duration::from_secs(4), |m| {
        m.contains("stalled")
    });
    assert!(
        after.last().unwrap().contains("STATUS=stalled: boot"),
        "{after:?}"
    );
    let silence = messages_until(&notify, Instant::now() + Duration::from_secs(3), |_| false);
    assert!(
        !silence.iter().any(|m| m == "WATCHDOG=1"),
        "pinged after the hang: {silence:?}"
    );
    // The API itself still answers: only systemd's watchdog ends this daemon.
    assert_eq!(daemon.get_json("/v1/health")["status"], "ok");
}
