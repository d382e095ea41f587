//! Runs the real `pangeod` binary as a child process on a config in a temp dir.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use pangeod::client;

pub mod controlplane;
pub mod hub;
pub mod timing;

pub const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// pangeod's stderr, drained by a thread as it comes (a full pipe would block its logging).
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    /// A temp dir with a valid config; `extra` is appended to the main file.
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ipa-password"), "secret\n").unwrap();
        std::fs::write(dir.path().join("ipa-ca.pem"), CA).unwrap();
        let daemon = Self {
            dir,
            child: None,
            log: Default::default(),
            drain: None,
        };
        daemon.write_main(&format!("{}{extra}", Self::main_text()));
        daemon
    }

    pub fn main_text() -> String {
        r#"[cluster]
name = "test"
external_ip = "192.0.2.10"

[freeipa]
server = "localhost:636"
base_dn = "dc=example,dc=test"
bind_dn = "uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test"
password_file = "ipa-password"
ca_file = "ipa-ca.pem"

[api]
socket = "run/admin.sock"

[daemon]
state_dir = "state"
data_dir = "."
require_data_disk = false
min_free_gb = 0

[k3s]
# The daemon tests of the config, API and directory layers run no Kubernetes; the Kubernetes
# tests switch it on with a drop-in (k3s.mode = "external").
mode = "off"
"#
        .to_string()
    }

    /// The main file, pointed at the 389-ds fixture (cluster "demo", whose groups it holds).
    pub fn ldap_main_text(ldap: &std::collections::BTreeMap<String, String>) -> String {
        Self::main_text()
            .replace("name = \"test\"", "name = \"demo\"")
            .replace(
                "server = \"localhost:636\"",
                &format!("server = \"127.0.0.1:{}\"", ldap["LDAPS_PORT"]),
            )
            .replace(
                "password_file = \"ipa-password\"",
                &format!("password_file = \"{}\"", ldap["LDAP_BIND_PASSWORD_FILE"]),
            )
            .replace(
                "ca_file = \"ipa-ca.pem\"",
                &format!("ca_file = \"{}\"", ldap["LDAP_CA"]),
            )
    }

    /// [`TestDaemon::ldap_main_text`] with Kubernetes run by someone else (the test control
    /// plane), reached through `kubeconfig`.
    pub fn external_main_text(
        ldap: &std::collections::BTreeMap<String, String>,
        kubeconfig: &std::path::Path,
    ) -> String {
        Self::ldap_main_text(ldap).replace(
            "mode = \"off\"",
            &format!(
                "mode = \"external\"\nkubeconfig = \"{}\"",
                kubeconfig.display()
            ),
        )
    }

    /// [`TestDaemon::main_text`] with the TLS listener on a free port of 127.0.0.1 and
    /// `allowed` as `api.admin_allowed_cidrs` (TOML strings, comma-separated).
    pub fn tcp_main_text(allowed: &str) -> String {
        Self::main_text().replace(
            "[api]\nsocket = \"run/admin.sock\"\n",
            &format!("[api]\nsocket = \"run/admin.sock\"\nlisten = \"127.0.0.1:0\"\nadmin_allowed_cidrs = [{allowed}]\n"),
        )
    }

    /// The bearer token pangeod generated for its TLS listener.
    pub fn api_token(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir().join("api-token")).unwrap();
        text.trim().split_once(':').unwrap().1.to_string()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pangeod.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/admin.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_main(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn write_dropin(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.dir.path().join("pangeod.d");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pangeod"));
        command
            .arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Starts the daemon and waits until its socket answers.
    pub fn start(&mut self) {
        let command = self.command();
        self.start_command(command);
    }

    /// Starts pangeod with a command of the test's own (a umask, another user) and waits until
    /// it answers.
    pub fn start_command(&mut self, mut command: Command) {
        let mut child = command.spawn().unwrap();
        if let Some(mut stderr) = child.stderr.take() {
            let log = self.log.clone();
            self.drain = Some(std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            }));
        }
        self.child = Some(child);
        let started = jiff::Timestamp::now();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pangeod exited early with {status}: {}", self.stderr());
            }
            if self.try_get("/v1/health").is_some() {
                self.wait_config_step(started, deadline);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pangeod did not answer on {}", self.socket().display());
    }

    /// Waits (until `deadline`, then goes on) for this process's `config` step to settle, so
    /// that a test's first request meets the config in force, not the "no valid config yet" of
    /// the first milliseconds. A step restored from an earlier run is older than `started`.
    fn wait_config_step(&self, started: jiff::Timestamp, deadline: Instant) {
        while Instant::now() < deadline {
            let settled = self
                .try_get("/v1/status")
                .and_then(|r| r.json().ok())
                .is_some_and(|status| {
                    let config = step(&status, "config");
                    let at = config["updated_at"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                    matches!(
                        config["state"].as_str(),
                        Some("done" | "failed" | "skipped")
                    ) && at.is_some_and(|at| at >= started - jiff::SignedDuration::from_millis(1))
                });
            if settled {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the child to exit and returns its code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pangeod did not exit within {within:?}");
    }

    /// What pangeod wrote to stderr so far (all of it once it has exited).
    pub fn stderr(&mut self) -> String {
        let exited = self
            .child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if exited && let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        // A child spawned by the test itself (not through start_command) is read here.
        if let Some(stderr) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            use std::io::Read;
            let mut rest = Vec::new();
            let _ = stderr.read_to_end(&mut rest);
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&rest);
        }
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> client::Response {
        self.request_within(method, path, headers, body, Duration::from_secs(10))
    }

    /// A request that may take up to `limit` (past the API's own 15 s deadline).
    pub fn request_within(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> client::Response {
        runtime()
            .block_on(client::request(
                &self.socket(),
                method,
                path,
                headers,
                body,
                limit,
            ))
            .unwrap()
    }

    /// `PATCH /v1/config` with a JSON body.
    pub fn patch_config(&self, body: &str) -> client::Response {
        self.request(
            Method::PATCH,
            "/v1/config",
            &[("content-type", "application/json")],
            Some(body.as_bytes().to_vec()),
        )
    }

    pub fn try_get(&self, path: &str) -> Option<client::Response> {
        runtime()
            .block_on(client::request(
                &self.socket(),
                Method::GET,
                path,
                &[],
                None,
                Duration::from_secs(2),
            ))
            .ok()
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        self.request(Method::GET, path, &[], None).json().unwrap()
    }

    pub fn get_text(&self, path: &str) -> String {
        let response = self.request(Method::GET, path, &[], None);
        String::from_utf8_lossy(&response.body).into_owned()
    }

    /// Polls `/v1/status` until `check` holds.
    pub fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_status_within(what, Duration::from_secs(20), check)
    }

    pub fn wait_status_within(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            last = self.get_json("/v1/status");
            if check(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("status never showed {what}; last: {last:#}");
    }

    pub fn stop(&mut self) {
        if self.child.is_some() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let code = self.wait_exit(Duration::from_secs(15));
            assert_eq!(code, Some(0), "graceful stop must exit 0");
            self.child = None;
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// For tests that run tasks in the background while the test thread waits.
pub fn mt_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The 389-ds fixture's settings, or `None` (printing SKIPPED) when the test command did not
/// start it. With PANGEO_REQUIRE_FIXTURES set, a missing fixture is a failure.
pub fn ldap_env() -> Option<std::collections::BTreeMap<String, String>> {
    let Ok(workdir) = std::env::var("LDAP_WORKDIR") else {
        if std::env::var("PANGEO_REQUIRE_FIXTURES").is_ok() {
            panic!(
                "LDAP_WORKDIR is not set but PANGEO_REQUIRE_FIXTURES is: the 389-ds fixture did not start"
            );
        }
        eprintln!(
            "SKIPPED: the 389-ds fixture is not running (LDAP_WORKDIR unset); run integration-tests/run"
        );
        return None;
    };
    let text = std::fs::read_to_string(PathBuf::from(workdir).join("env")).unwrap();
    Some(
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect(),
    )
}

pub fn step<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// Config and preflight are done. (The directory-sync step fails in these tests: no FreeIPA
/// runs for them; daemon/tests/directory.rs covers it against the real server.)
pub fn booted(status: &serde_json::Value) -> bool {
    step(status, "preflight")["state"] == "done"
}

/// Changes the 389-ds fixture as Directory Manager, with all plugins live.
pub fn ldap_modify(env: &std::collections::BTreeMap<String, String>, ldif: &str) {
    use std::io::Write;
    let mut child = Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            &env["LDAP_URI"],
            "-D",
            &env["LDAP_DM_DN"],
            "-w",
            &env["LDAP_DM_PASSWORD"],
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "ldapmodify failed:\n{ldif}"
    );
}

/// The problem document of an error response (and that it is one).
pub fn problem(response: &client::Response) -> serde_json::Value {
    assert_eq!(
        response.content_type.as_deref(),
        Some("application/problem+json"),
        "{response:?}"
    );
    response.json().unwrap()
}
