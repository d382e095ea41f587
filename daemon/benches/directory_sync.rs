//! `LDAP_WORKDIR=... cargo bench --bench directory_sync`: the directory sync against the real
//! 389-ds fixture with whatever dataset is loaded (integration-tests/bench-directory.sh loads
//! 10,000 or 100,000 members and runs this).
//!
//! Baseline, same session, same server, same query: `ldapsearch -E pr=1000/noprompt` of the
//! member filter with the same attributes, output discarded. Each run does the baseline, then a
//! first full sync into an empty state (every user inserted), then a full sync into a populated
//! state (the steady state), so the baseline and the syncs see the same machine load (it
//! changes over minutes when other builds share the cores). `BENCH_RUNS` runs (default 3),
//! medians reported. Then the no-change check while a background writer modifies an unrelated
//! entry every second. Prints a Markdown table for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pangeod::config::{Config, Layer};
use pangeod::directory::DirectorySync;
use pangeod::state::State;

const CHECKS: usize = 20;

fn main() {
    let Ok(workdir) = std::env::var("LDAP_WORKDIR") else {
        eprintln!(
            "SKIPPED: set LDAP_WORKDIR to a running 389-ds fixture (integration-tests/bench-directory.sh does)"
        );
        return;
    };
    let env: BTreeMap<String, String> = std::fs::read_to_string(format!("{workdir}/env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let get = |k: &str| env[k].clone();
    let cluster = std::env::var("BENCH_CLUSTER").unwrap_or_else(|_| "demo".into());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[cluster]\nname = \"{cluster}\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"127.0.0.1:{}\"\nbase_dn = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
        get("LDAPS_PORT"),
        get("LDAP_BASE_DN"),
        get("LDAP_BIND_DN"),
        get("LDAP_BIND_PASSWORD_FILE"),
        get("LDAP_CA")
    );
    let layer = Layer::from_str("bench.toml", Some(dir.path().to_path_buf()), &text).unwrap();
    let config = Config::from_layers(&[layer], &Default::default()).unwrap();
    let groups = get("LDAP_GROUPS_DN");
    let filter = format!(
        "(|(memberOf=cn={}_notebook_users,{groups})(memberOf=cn={}_notebook_admins,{groups})(uid=admin))",
        config.users_group().trim_end_matches("_notebook_users"),
        config.admins_group().trim_end_matches("_notebook_admins"),
    );
    let password = std::fs::read_to_string(get("LDAP_BIND_PASSWORD_FILE")).unwrap();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    // Baseline: ldapsearch, paged at 1000, the same query and attributes. Returns the
    // elapsed seconds and the number of entries read.
    let baseline = || {
        let started = Instant::now();
        let output = Command::new("ldapsearch")
            .args([
                "-x",
                "-LLL",
                "-H",
                &format!("ldaps://127.0.0.1:{}", get("LDAPS_PORT")),
                "-D",
                &get("LDAP_BIND_DN"),
                "-w",
                password.trim(),
            ])
            .args([
                "-E",
                "pr=1000/noprompt",
                "-b",
                &get("LDAP_USERS_DN"),
                &filter,
                "uid",
                "cn",
                "mail",
                "memberOf",
                "nsAccountLock",
                "entryUSN",
            ])
            .env("LDAPTLS_CACERT", get("LDAP_CA"))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        assert!(output.status.success(), "ldapsearch failed");
        let entries = output
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"dn: "))
            .count();
        (elapsed, entries)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ldapsearch = Vec::new();
    let mut entries = 0;
    let mut first = Vec::new();
    let mut members = 0;
    let mut steady = Vec::new();
    let mut last_sync = None;
    for run in 0..runs {
        let (elapsed, read) = baseline();
        ldapsearch.push(elapsed);
        entries = read;
        let state = Arc::new(State::open(&dir.path().join(format!("state-{run}"))).unwrap());
        let sync = DirectorySync::new(state.clone());
        let started = Instant::now();
        let report = rt.block_on(sync.run(&config, "bench", true)).unwrap();
        first.push(started.elapsed().as_secs_f64());
        members = report.run.members;
        let started = Instant::now();
        rt.block_on(sync.run(&config, "bench", true)).unwrap();
        steady.push(started.elapsed().as_secs_f64());
        eprintln!(
            "run {run}: ldapsearch {elapsed:.3} s, sync into empty {:.3} s, into populated {:.3} s",
            first[run], steady[run]
        );
        last_sync = Some(sync);
    }
    let sync = last_sync.unwrap();

    // The no-change check while an unrelated entry changes every second.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let (uri, dm, pw, dn) = (
            get("LDAP_URI"),
            get("LDAP_DM_DN"),
            get("LDAP_DM_PASSWORD"),
            format!("uid=mallory,{}", get("LDAP_USERS_DN")),
        );
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let ldif = format!(
                    "dn: {dn}\nchangetype: modify\nreplace: description\ndescription: tick {i}\n"
                );
                let mut child = Command::new("ldapmodify")
                    .args(["-x", "-H", &uri, "-D", &dm, "-w", &pw])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(&mut child.stdin.take().unwrap(), ldif.as_bytes())
                    .unwrap();
                child.wait().unwrap();
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            i
        })
    };
    let mut checks = Vec::new();
    let mut outcomes = BTreeMap::new();
    for _ in 0..CHECKS {
        let started = Instant::now();
        let report = rt.block_on(sync.run(&config, "bench", false)).unwrap();
        checks.push(started.elapsed().as_secs_f64() * 1000.0);
        *outcomes.entry(report.run.outcome).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap();

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ls, fs, ss) = (
        median(ldapsearch),
        median(first.clone()),
        median(steady.clone()),
    );
    checks.sort_by(f64::total_cmp);
    println!("| measurement ({members} active members, {entries} entries read) | value |");
    println!("|---|---|");
    println!("| baseline: ldapsearch -E pr=1000, median of {runs} | {ls:.3} s |");
    println!(
        "| first full sync into an empty state (insert all), median of {runs} | {fs:.3} s (ratio {:.2}) |",
        fs / ls
    );
    println!(
        "| full sync into a populated state, median of {runs} | {ss:.3} s (ratio {:.2}) |",
        ss / ls
    );
    println!(
        "| no-change sync while an unrelated entry changes every second ({writes} writes), {CHECKS} runs: p50 / max | {:.1} / {:.1} ms, outcomes {outcomes:?} |",
        checks[CHECKS / 2],
        checks[CHECKS - 1]
    );
    println!("| peak RSS of the bench process (VmHWM; sync + state + runtime) | {hwm} |");
}
