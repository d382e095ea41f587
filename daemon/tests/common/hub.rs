//! The real JupyterHub fixture (integration-tests/fixtures/hub), started by its own scripts
//! with the hub config pangeod renders, logging in against the 389-ds fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration-tests/fixtures/hub")
}

pub struct HubFixture {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
}

impl HubFixture {
    /// Starts proxy, gateway and hub on `config_py`; None (SKIPPED) when the venv cannot be
    /// had, a failure when PANGEO_REQUIRE_FIXTURES is set.
    pub fn start(config_py: &Path) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pangeo-hub-test.")
            .tempdir()
            .unwrap();
        let status = Command::new(fixture_dir().join("start.sh"))
            .arg(dir.path())
            .arg(config_py)
            .status()
            .unwrap();
        match status.code() {
            Some(0) => {}
            Some(3) if std::env::var("PANGEO_REQUIRE_FIXTURES").is_err() => {
                eprintln!("SKIPPED: the hub fixture cannot be installed here (see above)");
                return None;
            }
            other => panic!("the hub fixture did not start: {other:?}"),
        }
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Self { dir, env })
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} missing from the hub fixture's env"))
    }

    /// Starts the fixture on the hub config pangeod renders from `daemon`'s config (the hub
    /// then checks logins with the product's rules).
    pub fn for_daemon(daemon: &super::TestDaemon) -> Option<Self> {
        Self::for_daemon_with(daemon, "")
    }

    /// The same, with `extra_py` appended to the rendered config (a test's own hub behaviour,
    /// such as a slow spawn).
    pub fn for_daemon_with(daemon: &super::TestDaemon, extra_py: &str) -> Option<Self> {
        let layer = pangeod::config::Layer::from_str(
            "pangeod.toml",
            Some(daemon.dir.path().to_path_buf()),
            &std::fs::read_to_string(daemon.config_path()).unwrap(),
        )
        .unwrap();
        let config = pangeod::config::Config::from_layers(&[layer], &Default::default()).unwrap();
        let config_py = daemon.dir.path().join("jupyterhub_config.py");
        std::fs::write(
            &config_py,
            pangeod::components::values::hub_config_py(&config) + extra_py,
        )
        .unwrap();
        Self::start(&config_py)
    }

    /// Points `daemon` at this hub (`hub.api_url`, `hub.api_token_file`), with a drop-in.
    pub fn attach(&self, daemon: &super::TestDaemon) {
        let token_file = self.token_file(daemon.dir.path());
        daemon.write_dropin(
            "50-hub.toml",
            &format!(
                "[hub]\napi_url = \"{}\"\napi_token_file = \"{}\"\n",
                self.get("HUB_API_URL"),
                token_file.display()
            ),
        );
    }

    /// A call to the hub's REST API as the `pangeo-appliance` service (admin): the status and
    /// the JSON body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.get("HUB_API_URL"));
        curl_json(method, &url, self.get("HUB_ADMIN_TOKEN"), body)
    }

    /// `stop`, `start` or `restart` of the hub process alone (database, ports and tokens kept).
    pub fn hub_process(&self, action: &str) {
        let status = Command::new(fixture_dir().join("hub-process.sh"))
            .arg(self.dir.path())
            .arg(action)
            .status()
            .unwrap();
        assert!(status.success(), "hub-process.sh {action} failed");
    }

    /// A file holding the `pangeo-appliance` service's token, for `hub.api_token_file`.
    pub fn token_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("hub-token");
        std::fs::write(&path, format!("{}\n", self.get("HUB_ADMIN_TOKEN"))).unwrap();
        path
    }

    /// Logs in through the login form (XSRF cookie and field, as a browser does) and returns
    /// the cookie jar when the hub let the user in.
    pub fn login(&self, user: &str, password: &str, jar: &Path) -> Option<PathBuf> {
        let url = self.get("HUB_URL");
        let _ = std::fs::remove_file(jar);
        let got = Command::new("curl")
            .args(["-s", "--max-time", "10", "-o", "/dev/null", "-c"])
            .arg(jar)
            .arg("-b")
            .arg(jar)
            .arg(format!("{url}/hub/login"))
            .status()
            .unwrap();
        assert!(got.success(), "GET /hub/login failed");
        let jar_text = std::fs::read_to_string(jar).unwrap_or_default();
        let xsrf = jar_text
            .lines()
            .filter_map(|l| {
                let fields: Vec<&str> = l.split('\t').collect();
                (fields.len() >= 7 && fields[5] == "_xsrf").then(|| fields[6].to_string())
            })
            .next()
            .unwrap_or_default();
        let output = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("-c")
            .arg(jar)
            .arg("-b")
            .arg(jar)
            .args(["--data-urlencode", &format!("username={user}")])
            .args(["--data-urlencode", &format!("password={password}")])
            .args(["--data-urlencode", &format!("_xsrf={xsrf}")])
            .arg(format!("{url}/hub/login?next="))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&output.stdout).to_string();
        let jar_text = std::fs::read_to_string(jar).unwrap_or_default();
        (code == "302" && jar_text.contains("jupyterhub-hub-login")).then(|| jar.to_path_buf())
    }

    /// The status of a GET of `path` (under the hub's URL) with a login cookie jar.
    pub fn get_with_cookie(&self, path: &str, jar: &Path) -> u16 {
        let output = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("-b")
            .arg(jar)
            .arg(format!("{}{path}", self.get("HUB_URL")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
    }
}

impl Drop for HubFixture {
    fn drop(&mut self) {
        let _ = Command::new(fixture_dir().join("stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// One request with a token; the status and the JSON body (null when there is none).
pub fn curl_json(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .args(["-H", &format!("Authorization: token {token}")]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data", body]);
    }
    let output = command.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
