//! `CONTROLPLANE_WORKDIR=... cargo bench --bench kube_apply`: the Kubernetes layer against the
//! test control plane (integration-tests/controlplane/start.sh), printing Markdown rows for
//! docs/BENCHMARKS.md.
//!
//! 1. Supervisor start to API ready: the direct-child supervisor runs a kube-apiserver (from
//!    the fixture's apiserver.args, on the shared kine) and `wait_ready` returns (kubeconfig,
//!    /readyz, node Ready by watch). Baseline: the same binary spawned by std::process and
//!    /readyz polled every 100 ms with curl, as the fixture script does.
//! 2. Apply latency of the desired object set (a namespace, three HelmCharts with 8 KiB of
//!    values each, three Secrets), on a cold API server (just started, first client) and warm
//!    (the same set again, a no-op). Baseline: `kubectl apply --server-side` of the same
//!    objects as one file, cold (a fresh kubectl, which runs discovery) and warm.
//! 3. Growth: `apply_all` of 10, 100 and 1,000 ConfigMaps, create and no-op re-apply, against
//!    `kubectl apply --server-side` of the same objects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::ObjectMeta;
use pangeod::k3s::ready::wait_ready;
use pangeod::k3s::supervisor::{ChildSpec, RestartPolicy, Supervisor};
use pangeod::k8s::{Desired, FailurePolicy, HelmChart, HelmChartSpec, Kube};

const RUNS: usize = 5;

struct Plane {
    env: BTreeMap<String, String>,
}

impl Plane {
    fn get(&self, k: &str) -> &str {
        &self.env[k]
    }
    fn kubeconfig_for(&self, port: u16, path: &Path) {
        let text = std::fs::read_to_string(self.get("KUBECONFIG")).unwrap();
        let url = self.get("APISERVER_URL");
        std::fs::write(
            path,
            text.replace(url, &format!("https://127.0.0.1:{port}")),
        )
        .unwrap();
    }
    fn apiserver_args(&self, port: u16) -> Vec<String> {
        std::fs::read_to_string(self.get("APISERVER_ARGS"))
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.replace("{port}", &port.to_string()))
            .collect()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

/// The desired set the appliance applies, with realistic sizes.
fn desired_set(ns: &str) -> (Vec<Desired>, String) {
    let mut objects = vec![
        Desired::from_typed(&Namespace {
            metadata: meta(None, ns),
            ..Default::default()
        })
        .unwrap(),
    ];
    let values: String = (0..256)
        .map(|i| format!("key{i:03}: value-{i:020}\n"))
        .collect();
    for chart in ["jupyterhub", "dask-gateway", "lvm-localpv"] {
        let mut hc = HelmChart::new(
            chart,
            HelmChartSpec {
                chart: Some(format!(
                    "https://%{{KUBERNETES_API}}%/static/charts/{chart}.tgz"
                )),
                target_namespace: Some(ns.into()),
                values_content: Some(values.clone()),
                failure_policy: Some(FailurePolicy::Retry),
                ..Default::default()
            },
        );
        hc.metadata.namespace = Some(ns.into());
        objects.push(Desired::from_typed(&hc).unwrap());
    }
    for secret in ["hub-secrets", "proxy-token", "gateway-token"] {
        objects.push(
            Desired::from_typed(&Secret {
                metadata: meta(Some(ns), secret),
                data: Some(BTreeMap::from([(
                    "token".to_string(),
                    ByteString(vec![7u8; 64]),
                )])),
                ..Default::default()
            })
            .unwrap(),
        );
    }
    let yaml = objects_yaml(&objects);
    (objects, yaml)
}

fn config_maps(ns: &str, n: usize) -> (Vec<Desired>, String) {
    let mut objects = vec![
        Desired::from_typed(&Namespace {
            metadata: meta(None, ns),
            ..Default::default()
        })
        .unwrap(),
    ];
    for i in 0..n {
        objects.push(
            Desired::from_typed(&ConfigMap {
                metadata: meta(Some(ns), &format!("cm-{i:04}")),
                data: Some(BTreeMap::from([("i".to_string(), i.to_string())])),
                ..Default::default()
            })
            .unwrap(),
        );
    }
    let yaml = objects_yaml(&objects);
    (objects, yaml)
}

/// The same objects as one JSON list kubectl can apply.
fn objects_yaml(objects: &[Desired]) -> String {
    let items: Vec<serde_json::Value> = objects
        .iter()
        .map(|d| serde_json::to_value(d.object()).unwrap())
        .collect();
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
}

fn kubectl_apply(plane: &Plane, kubeconfig: &Path, file: &Path, cache: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(plane.get("KUBECTL"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "bench",
            "-f",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

struct OwnApiserver {
    child: std::process::Child,
    kubeconfig: PathBuf,
}

impl Drop for OwnApiserver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A fresh API server on the shared kine, ready.
fn own_apiserver(plane: &Plane, dir: &Path, rt: &tokio::runtime::Runtime) -> OwnApiserver {
    let port = free_port();
    let kubeconfig = dir.join(format!("kubeconfig-{port}"));
    plane.kubeconfig_for(port, &kubeconfig);
    let child = Command::new(plane.get("KUBE_APISERVER_BIN"))
        .args(plane.apiserver_args(port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = OwnApiserver { child, kubeconfig };
    rt.block_on(async {
        loop {
            if let Ok(kube) = Kube::from_kubeconfig(&server.kubeconfig).await
                && kube.readyz().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    server
}

fn main() {
    let Ok(workdir) = std::env::var("CONTROLPLANE_WORKDIR") else {
        eprintln!(
            "SKIPPED: set CONTROLPLANE_WORKDIR to a running control plane (integration-tests/controlplane/start.sh DIR)"
        );
        return;
    };
    let plane = Plane {
        env: std::fs::read_to_string(format!("{workdir}/env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = plane.get("NODE_NAME").to_string();

    // 1. Supervisor start to API ready.
    let mut supervised = Vec::new();
    let mut baseline = Vec::new();
    for run in 0..RUNS {
        let port = free_port();
        let kubeconfig = dir.path().join(format!("sup-{run}"));
        plane.kubeconfig_for(port, &kubeconfig);
        let _guard = rt.enter();
        let started = Instant::now();
        let supervisor = Supervisor::child(
            ChildSpec {
                name: "apiserver".into(),
                program: plane.get("KUBE_APISERVER_BIN").into(),
                args: plane
                    .apiserver_args(port)
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                env: Vec::new(),
                log_file: dir.path().join(format!("sup-{run}.log")),
                pid_file: dir.path().join(format!("sup-{run}.pid")),
            },
            RestartPolicy::default(),
        );
        rt.block_on(async {
            wait_ready(
                Some(&supervisor),
                &kubeconfig,
                &node,
                Duration::from_secs(120),
                &|_, _| {},
            )
            .await
            .unwrap();
        });
        supervised.push(started.elapsed());
        rt.block_on(supervisor.stop());

        let port = free_port();
        let started = Instant::now();
        let mut child = Command::new(plane.get("KUBE_APISERVER_BIN"))
            .args(plane.apiserver_args(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    "--cacert",
                    plane.get("CA_CERT"),
                    "--cert",
                    plane.get("ADMIN_CERT"),
                    "--key",
                    plane.get("ADMIN_KEY"),
                ])
                .arg(format!("https://127.0.0.1:{port}/readyz"))
                .stderr(Stdio::null())
                .output()
                .unwrap();
            if out.stdout == b"ok" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        baseline.push(started.elapsed());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let (s, b) = (median(supervised.clone()), median(baseline.clone()));
    println!(
        "| supervisor start → ready (kubeconfig, /readyz, node Ready), median of {RUNS} | {} | spawn + curl /readyz every 100 ms: {} | {:.2}x |",
        ms(s),
        ms(b),
        s.as_secs_f64() / b.as_secs_f64()
    );

    // 2. The desired set on a cold and a warm API server.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut k_cold = Vec::new();
    let mut k_warm = Vec::new();
    for run in 0..RUNS {
        let server = own_apiserver(&plane, dir.path(), &rt);
        let (objects, _) = desired_set(&format!("bench-set-{}-{run}", std::process::id()));
        let started = Instant::now();
        let kube = rt
            .block_on(Kube::from_kubeconfig(&server.kubeconfig))
            .unwrap();
        rt.block_on(kube.apply_all(&objects, Duration::from_secs(60)))
            .unwrap();
        cold.push(started.elapsed());
        let started = Instant::now();
        rt.block_on(kube.apply_all(&objects, Duration::from_secs(60)))
            .unwrap();
        warm.push(started.elapsed());
        drop(server);

        let server = own_apiserver(&plane, dir.path(), &rt);
        let (_, json) = desired_set(&format!("bench-kubectl-{}-{run}", std::process::id()));
        let file = dir.path().join(format!("set-{run}.json"));
        std::fs::write(&file, json).unwrap();
        let cache = dir.path().join(format!("kcache-{run}"));
        k_cold.push(kubectl_apply(&plane, &server.kubeconfig, &file, &cache));
        k_warm.push(kubectl_apply(&plane, &server.kubeconfig, &file, &cache));
    }
    for (what, ours, theirs) in [("cold", cold, k_cold), ("warm (no-op)", warm, k_warm)] {
        let (o, t) = (median(ours), median(theirs));
        println!(
            "| apply the desired set (7 objects, 24 KiB of values), {what} API server, median of {RUNS} | {} | kubectl apply --server-side: {} | {:.2}x |",
            ms(o),
            ms(t),
            o.as_secs_f64() / t.as_secs_f64()
        );
    }

    // 3. Growth with the object count, warm shared API server.
    let kube = rt
        .block_on(Kube::from_kubeconfig(Path::new(plane.get("KUBECONFIG"))))
        .unwrap();
    let shared = PathBuf::from(plane.get("KUBECONFIG"));
    for n in [10usize, 100, 1000] {
        let ns = format!("bench-grow-{}-{n}", std::process::id());
        let (objects, _) = config_maps(&ns, n);
        let started = Instant::now();
        rt.block_on(kube.apply_all(&objects, Duration::from_secs(600)))
            .unwrap();
        let create = started.elapsed();
        let started = Instant::now();
        rt.block_on(kube.apply_all(&objects, Duration::from_secs(600)))
            .unwrap();
        let again = started.elapsed();

        let (_, json) = config_maps(&format!("{ns}-kubectl"), n);
        let file = dir.path().join(format!("grow-{n}.json"));
        std::fs::write(&file, json).unwrap();
        let cache = dir.path().join("kcache-grow");
        let k_create = kubectl_apply(&plane, &shared, &file, &cache);
        let k_again = kubectl_apply(&plane, &shared, &file, &cache);
        println!(
            "| apply_all {n} ConfigMaps: create / no-op | {} / {} ({:.2} / {:.2} ms per object) | kubectl apply --server-side: {} / {} | {:.2}x / {:.2}x |",
            ms(create),
            ms(again),
            create.as_secs_f64() * 1000.0 / n as f64,
            again.as_secs_f64() * 1000.0 / n as f64,
            ms(k_create),
            ms(k_again),
            create.as_secs_f64() / k_create.as_secs_f64(),
            again.as_secs_f64() / k_again.as_secs_f64()
        );
    }
}
