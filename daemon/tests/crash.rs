//! `kill -9` during writes: every write the state module acknowledged is there afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pangeod::state::State;

const WRITER_ENV: &str = "PANGEOD_TEST_WRITER_DIR";

/// The child: writes events as fast as it can and acknowledges each one after it returned.
#[test]
fn writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return; // Only does something when started by the test below.
    };
    let state = State::open(std::path::Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let id = state
            .record_event("writer", "test.write", serde_json::json!({ "i": i }))
            .unwrap();
        writeln!(out, "ack {id}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("ack ") {
                acked.push(id.parse::<i64>().unwrap());
            }
            if acked.len() >= 50 + round * 37 || Instant::now() > deadline {
                // Mid-stream: the child is writing its next event right now.
                child.kill().unwrap();
                break;
            }
        }
        child.wait().unwrap();
        assert!(
            acked.len() >= 50,
            "the writer acknowledged only {} writes",
            acked.len()
        );

        let state = State::open(dir.path()).unwrap();
        let stored: std::collections::HashSet<i64> = state
            .events(None, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged events lost after kill -9: {lost:?}"
        );
    }
}
