//! The test Kubernetes control plane (integration-tests/controlplane), started once by the test
//! command, which sets CONTROLPLANE_WORKDIR. Tests that kill an API server run their own, on
//! the same kine and PKI, from the fixture's `apiserver.args`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use pangeod::k8s::Kube;

pub struct ControlPlane {
    env: BTreeMap<String, String>,
}

/// The running control plane, or `None` (printing SKIPPED) when the test command did not start
/// one. With PANGEO_REQUIRE_FIXTURES set, a missing plane is a failure.
pub fn controlplane() -> Option<ControlPlane> {
    let Ok(workdir) = std::env::var("CONTROLPLANE_WORKDIR") else {
        if std::env::var("PANGEO_REQUIRE_FIXTURES").is_ok()
            && std::env::var("PANGEO_CONTROLPLANE_SKIPPED").is_err()
        {
            panic!(
                "CONTROLPLANE_WORKDIR is not set but PANGEO_REQUIRE_FIXTURES is: the control plane did not start"
            );
        }
        eprintln!(
            "SKIPPED: the test control plane is not running (CONTROLPLANE_WORKDIR unset); run integration-tests/run"
        );
        return None;
    };
    let text = std::fs::read_to_string(Path::new(&workdir).join("env")).unwrap();
    let env = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(ControlPlane { env })
}

impl ControlPlane {
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} missing from the control plane env"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.get("KUBECONFIG"))
    }

    pub async fn kube(&self) -> Kube {
        Kube::from_kubeconfig(&self.kubeconfig()).await.unwrap()
    }

    /// The admin kubeconfig, pointed at another port.
    pub fn kubeconfig_for_port(&self, port: u16, path: &Path) {
        let text = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let url = self.get("APISERVER_URL");
        assert!(text.contains(url));
        std::fs::write(
            path,
            text.replace(url, &format!("https://127.0.0.1:{port}")),
        )
        .unwrap();
    }

    /// The kube-apiserver argv for `port`.
    pub fn apiserver_command(&self, port: u16) -> (PathBuf, Vec<String>) {
        let args = std::fs::read_to_string(self.get("APISERVER_ARGS")).unwrap();
        let args = args
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.replace("{port}", &port.to_string()))
            .collect();
        (PathBuf::from(self.get("KUBE_APISERVER_BIN")), args)
    }
}

/// A free TCP port on 127.0.0.1 (racy by nature, as every such pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test's own API server on the shared kine: kill it, start it again, the shared one is
/// not disturbed. Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Apiserver {
    pub port: u16,
    pub kubeconfig: PathBuf,
    log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Apiserver {
    /// Starts one and waits until `/readyz` answers ok.
    pub fn start(cp: &ControlPlane, dir: &Path) -> Self {
        let port = free_port();
        let kubeconfig = dir.join(format!("kubeconfig-{port}"));
        cp.kubeconfig_for_port(port, &kubeconfig);
        let (program, args) = cp.apiserver_command(port);
        let mut server = Self {
            port,
            kubeconfig,
            log: dir.join(format!("apiserver-{port}.log")),
            program,
            args,
            child: None,
        };
        server.spawn();
        server.wait_ready(Duration::from_secs(60));
        server
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let rt = super::runtime();
        loop {
            let ok = rt.block_on(async {
                match Kube::from_kubeconfig(&self.kubeconfig).await {
                    Ok(kube) => kube.readyz().await.is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test apiserver on port {} was not ready within {within:?}; log: {}",
                self.port,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (SIGSTOP freezes it: connections hang and nothing answers).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A namespace name no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Registers a Ready node, as a kubelet would (the test plane has none of its own for `name`).
pub async fn register_ready_node(kube: &Kube, name: &str) {
    let api: kube::Api<Node> = kube::Api::all(kube.client().clone());
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    kube.apply(&node).await.unwrap();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = serde_json::json!({ "status": NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("registered by the test".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
        }]),
        ..Default::default()
    }});
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .unwrap();
}

/// A valid config for cluster `demo` with files in `dir` (the directory is not contacted).
pub fn demo_config(dir: &Path) -> pangeod::config::Config {
    std::fs::write(dir.join("pw"), "x").unwrap();
    std::fs::write(dir.join("ca.pem"), super::CA).unwrap();
    let layer = pangeod::config::Layer::from_str(
        "t.toml",
        Some(dir.to_path_buf()),
        "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"ipa.example.test\"\nbase_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,dc=example,dc=test\"\npassword_file = \"pw\"\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    pangeod::config::Config::from_layers(&[layer], &Default::default()).unwrap()
}

/// A pangeod in `external` mode on `kubeconfig` and the directory fixture (`ldap`), with the
/// node "demo" (the fixture's cluster) registered, started and past the kubernetes-api step.
#[allow(dead_code)] // not every test binary that includes `common` uses it
pub fn external_daemon(
    cp: &ControlPlane,
    ldap: &std::collections::BTreeMap<String, String>,
    kubeconfig: &Path,
) -> super::TestDaemon {
    super::runtime().block_on(async { register_ready_node(&cp.kube().await, "demo").await });
    let mut daemon = super::TestDaemon::new("");
    daemon.write_main(&super::TestDaemon::external_main_text(ldap, kubeconfig));
    daemon.start();
    daemon.wait_status_within("Kubernetes connected", Duration::from_secs(60), |s| {
        super::step(s, "kubernetes-api")["state"] == "done"
    });
    daemon
}
