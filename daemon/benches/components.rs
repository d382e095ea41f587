//! `cargo bench --bench components`: the components layer, printing Markdown rows for
//! docs/BENCHMARKS.md.
//!
//! 1. Render and validate the full set (three charts, both upstream schemas), warm, per run.
//!    Baseline: Python's `jsonschema` (the hub fixture's venv) validating the same effective
//!    values against the same schemas, per run, in one process.
//! 2. With CONTROLPLANE_WORKDIR and LDAP_WORKDIR (the fixtures): a running pangeod on the
//!    control plane; the time from `PATCH /v1/config` of notebook.cpus to the updated
//!    HelmChart being visible on the API server (seen by watch). Target under 1 s. Baseline:
//!    one server-side apply of the same HelmChart by a client, no daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use pangeod::components::{self, DirectoryMaterial, Secrets};
use pangeod::config::{Config, Layer};
use pangeod::k8s::{HelmChart, Kube};

const RUNS: usize = 200;

fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("pw"), "x").unwrap();
    std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text = "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"ipa.example.test\"\nbase_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test\"\npassword_file = \"pw\"\nca_file = \"ca.pem\"\n";
    let layer = Layer::from_str("bench.toml", Some(dir.to_path_buf()), text).unwrap();
    Config::from_layers(&[layer], &Default::default()).unwrap()
}

fn secrets() -> Secrets {
    Secrets {
        proxy_token: "p".repeat(64),
        cookie_secret: "c".repeat(64),
        appliance_token: "a".repeat(64),
        gateway_token: "g".repeat(64),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let directory = DirectoryMaterial {
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
    };

    // 1. Render + validate.
    let cold = Instant::now();
    components::render(&config, &secrets(), &directory)
        .validate()
        .unwrap();
    let cold = cold.elapsed();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let rendered = components::render(&config, &secrets(), &directory);
        rendered.validate().unwrap();
        times.push(t.elapsed());
    }
    let ours = median(times);

    // Baseline: Python jsonschema over the same effective values and schemas.
    let rendered = components::render(&config, &secrets(), &directory);
    let charts = concat!(env!("CARGO_MANIFEST_DIR"), "/charts");
    let mut docs = Vec::new();
    for chart in rendered.charts.iter().filter(|c| c.schema.is_some()) {
        let schema = chart.schema.unwrap().load().unwrap();
        let values = dir.path().join(format!("{}.json", chart.name));
        std::fs::write(&values, schema.effective(&chart.values).to_string()).unwrap();
        let folder = format!("{}-{}", chart.name, chart.version);
        docs.push((values, format!("{charts}/{folder}/values.schema.yaml")));
    }
    let python = std::env::var("HUB_VENV")
        .map(|v| format!("{v}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import json, time, yaml, jsonschema\npairs = [(json.load(open(v)), yaml.safe_load(open(s))) for v, s in {:?}]\nvalidators = [jsonschema.Draft7Validator(s) for _, s in pairs]\nts = []\nfor _ in range({RUNS}):\n    t = time.perf_counter()\n    for (v, _), val in zip(pairs, validators):\n        errs = list(val.iter_errors(v))\n        assert not errs, errs[:3]\n    ts.append(time.perf_counter() - t)\nts.sort()\nprint(ts[len(ts)//2])\n",
        docs.iter()
            .map(|(v, s)| (v.display().to_string(), s.clone()))
            .collect::<Vec<_>>()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .stderr(Stdio::inherit())
        .output();
    let baseline = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .ok()
            .map(Duration::from_secs_f64),
        _ => None,
    };
    match baseline {
        Some(b) => println!(
            "| render + validate the full set (3 charts, 2 upstream schemas), warm, median of {RUNS} | {:.2} ms (first call, schemas compiled: {:.0} ms) | Python jsonschema Draft7Validator, validation only: {:.2} ms | {:.2}x |",
            ours.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            ours.as_secs_f64() / b.as_secs_f64()
        ),
        None => println!(
            "| render + validate the full set, warm, median of {RUNS} | {:.2} ms (first call {:.0} ms) | (no Python jsonschema here: set HUB_VENV) | |",
            ours.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3
        ),
    }

    // 2. PATCH to visible HelmChart, through a running daemon.
    let (Ok(cp), Ok(ldap)) = (
        std::env::var("CONTROLPLANE_WORKDIR"),
        std::env::var("LDAP_WORKDIR"),
    ) else {
        eprintln!(
            "SKIPPED: the PATCH-to-HelmChart latency needs CONTROLPLANE_WORKDIR and LDAP_WORKDIR"
        );
        return;
    };
    patch_latency(dir.path(), &cp, &ldap);
}

fn env_file(path: &str) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

fn patch_latency(dir: &Path, cp: &str, ldap: &str) {
    let cp = env_file(&format!("{cp}/env"));
    let ldap = env_file(&format!("{ldap}/env"));
    let text = format!(
        "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"127.0.0.1:{}\"\nbase_dn = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n[api]\nsocket = \"run/admin.sock\"\n[daemon]\nstate_dir = \"state\"\ndata_dir = \".\"\nrequire_data_disk = false\nmin_free_gb = 0\n[k3s]\nmode = \"external\"\nkubeconfig = \"{}\"\n",
        ldap["LDAPS_PORT"],
        ldap["LDAP_BASE_DN"],
        ldap["LDAP_BIND_DN"],
        ldap["LDAP_BIND_PASSWORD_FILE"],
        ldap["LDAP_CA"],
        cp["KUBECONFIG"]
    );
    std::fs::write(dir.join("pangeod.toml"), text).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_pangeod"))
        .arg("--config")
        .arg(dir.join("pangeod.toml"))
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.join("run/admin.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = |method: hyper::Method, path: &str, body: Option<&str>| {
        rt.block_on(pangeod::client::request(
            &socket,
            method,
            path,
            &[("content-type", "application/json")],
            body.map(|b| b.as_bytes().to_vec()),
            Duration::from_secs(10),
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = request(hyper::Method::GET, "/v1/ready", None)
            && r.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "pangeod did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kube = rt
        .block_on(Kube::from_kubeconfig(Path::new(&cp["KUBECONFIG"])))
        .unwrap();
    let charts: kube::Api<HelmChart> = kube::Api::namespaced(kube.client().clone(), "pangeo");
    let mut latencies = Vec::new();
    for i in 0..10u32 {
        let cpus = 2 + i % 2;
        let (tx, rx) = std::sync::mpsc::channel();
        let api = charts.clone();
        let watch = rt.spawn(async move {
            let stream = watcher::watcher(
                api,
                watcher::Config::default().fields("metadata.name=jupyterhub"),
            )
            .default_backoff()
            .applied_objects();
            let mut stream = std::pin::pin!(stream);
            let _ = tx.send(());
            while let Some(Ok(chart)) = stream.next().await {
                let values: serde_json::Value =
                    serde_json::from_str(chart.spec.values_content.as_deref().unwrap_or("{}"))
                        .unwrap_or_default();
                if values["singleuser"]["cpu"]["limit"] == cpus {
                    return Instant::now();
                }
            }
            Instant::now()
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let r = request(
            hyper::Method::PATCH,
            "/v1/config",
            Some(&format!(r#"{{"notebook": {{"cpus": {cpus}}}}}"#)),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let seen = rt.block_on(watch).unwrap();
        latencies.push(seen.duration_since(started));
        std::thread::sleep(Duration::from_millis(500));
    }
    let ours = median(latencies.clone());

    // Baseline: one apply of the same HelmChart, no daemon.
    let mut applies = Vec::new();
    for _ in 0..10 {
        let mut chart = rt.block_on(charts.get("jupyterhub")).unwrap();
        chart.metadata.managed_fields = None;
        chart.metadata.resource_version = None;
        chart.metadata.uid = None;
        chart.metadata.creation_timestamp = None;
        chart.metadata.generation = None;
        chart.status = None;
        let t = Instant::now();
        rt.block_on(kube.apply(&chart)).unwrap();
        applies.push(t.elapsed());
    }
    let baseline = median(applies);
    println!(
        "| `PATCH /v1/config` notebook.cpus → the updated HelmChart seen by watch, median of 10 (max {:.0} ms) | {:.0} ms | one server-side apply of the HelmChart by a client: {:.1} ms | {:.1}x |",
        latencies.iter().max().unwrap().as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}
