//! The security suite: what a token holder, or anyone who reaches the admin API, must not be
//! able to do. Each case runs the real `pangeod` binary (and, where it needs one, the real
//! 389-ds fixture); beside the functional suites (api.rs, directory.rs) and the benchmarks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestDaemon;
use hyper::Method;
use pangeod::client;

fn patch(daemon: &TestDaemon, body: &serde_json::Value) -> client::Response {
    daemon.patch_config(&body.to_string())
}

use common::problem;

/// A listener of the test's own that counts connections and keeps what they send.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Trap {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, data) = (connections.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let data = data.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        data.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Self {
            port,
            connections,
            received,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn revision(daemon: &TestDaemon) -> serde_json::Value {
    daemon.get_json("/v1/config")["revision"].clone()
}

/// A real CA certificate's PEM.
fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn credential_files(daemon: &TestDaemon) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(daemon.state_dir().join("credentials")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_token_cannot_make_pangeod_read_or_send_a_file() {
    let trap = Trap::new();
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    let before = revision(&daemon);
    let server = format!("127.0.0.1:{}", trap.port);

    // The attack of the report: the server to a listener of the attacker's, no TLS, and a file
    // of the VM as the bind password.
    let attack = serde_json::json!({"freeipa": {
        "server": server, "tls": "plain", "password_file": "/etc/shadow"}});
    let response = patch(&daemon, &attack);
    assert_eq!(response.status, 409, "{response:?}");
    // Each piece of it alone is refused too, naming the key and the fix.
    for (body, status, field, kind) in [
        (
            serde_json::json!({"freeipa": {"password_file": "/etc/shadow"}}),
            409,
            "freeipa.password_file",
            "file-only-key",
        ),
        (
            serde_json::json!({"freeipa": {"ca_file": "/etc/shadow"}}),
            409,
            "freeipa.ca_file",
            "file-only-key",
        ),
        (
            serde_json::json!({"hub": {"api_token_file": "/etc/shadow"}}),
            409,
            "hub.api_token_file",
            "file-only-key",
        ),
        (
            serde_json::json!({"freeipa": {"tls": "plain"}}),
            409,
            "freeipa.tls",
            "file-only-value",
        ),
        (
            serde_json::json!({"freeipa": {"server": server}}),
            409,
            "freeipa.password",
            "password-required",
        ),
        (
            serde_json::json!({"freeipa": {"tls": "starttls"}}),
            409,
            "freeipa.password",
            "password-required",
        ),
        (
            serde_json::json!({"freeipa": {"ca_pem": ca_pem()}}),
            409,
            "freeipa.password",
            "password-required",
        ),
        (
            serde_json::json!({"freeipa": {"password": ""}}),
            422,
            "freeipa.password",
            "invalid-config",
        ),
        (
            serde_json::json!({"freeipa": {"password": "a\nb"}}),
            422,
            "freeipa.password",
            "invalid-config",
        ),
        (
            serde_json::json!({"freeipa": {"password": "x", "ca_pem": "not a certificate"}}),
            422,
            "freeipa.ca_pem",
            "invalid-config",
        ),
    ] {
        let response = patch(&daemon, &body);
        assert_eq!(response.status, status, "{body}: {response:?}");
        let problem = problem(&response);
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert_eq!(
            problem["type"],
            format!("urn:pangeod:problem:{kind}"),
            "{body}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("; "),
            "the message says the fix: {problem}"
        );
    }
    assert_eq!(revision(&daemon), before, "a refused change stored nothing");
    assert!(
        credential_files(&daemon).is_empty(),
        "a refused change leaves no credential file: {:?}",
        credential_files(&daemon)
    );
    // A sync now goes to the server in force, never to the listener.
    let _ = daemon.request(Method::POST, "/v1/sync", &[], None);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(trap.connections(), 0, "nothing was sent to the listener");
    daemon.stop();
}

/// Issue 19, item 4: new directory settings are in force only once they bind and find their
/// tree. A new server with its password and CA, where the server is a listener that speaks no
/// LDAP: the check goes there (over TLS, so the password is never sent), the PATCH is refused
/// with 409 naming the key and the directory's answer, and nothing is stored or in force.
#[test]
fn settings_the_directory_refuses_are_not_taken() {
    let trap = Trap::new();
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    let before = daemon.get_json("/v1/config");
    let server = format!("127.0.0.1:{}", trap.port);
    let secret = "s3cret-Value-7f3a";
    let response = patch(
        &daemon,
        &serde_json::json!({"freeipa": {"server": server, "password": secret, "ca_pem": ca_pem()}}),
    );
    assert_eq!(response.status, 409, "{response:?}");
    let problem = problem(&response);
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("directory-check-failed")),
        Some(true),
        "{problem}"
    );
    assert!(
        ["freeipa.server", "freeipa.ca_file"]
            .contains(&problem["field"].as_str().unwrap_or_default()),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("nothing was changed") && detail.contains(&server),
        "{detail}"
    );
    assert!(trap.connections() > 0, "the check went to the new server");
    let sent = trap.received.lock().unwrap().clone();
    assert!(
        !String::from_utf8_lossy(&sent).contains(secret),
        "the password was sent before TLS"
    );
    assert_eq!(daemon.get_json("/v1/config"), before, "nothing is in force");
    assert!(
        credential_files(&daemon).is_empty(),
        "nothing is stored: {:?}",
        credential_files(&daemon)
    );
    for path in ["/v1/config", "/v1/events?limit=50", "/v1/status"] {
        let body = daemon.request(Method::GET, path, &[], None).body;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(secret), "{path} shows the password: {text}");
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        !daemon.stderr().contains(secret),
        "the log shows the password"
    );
}

/// The password and CA given as values reach the real directory: the files hold a wrong
/// password and a CA that did not sign the server's certificate, and the sync binds only once
/// the right ones come through the API.
#[test]
fn credentials_by_value_bind_to_the_real_directory() {
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let mut daemon = TestDaemon::new("");
    let wrong_ca = daemon.dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, ca_pem()).unwrap();
    let wrong_password = daemon.dir.path().join("wrong-password");
    std::fs::write(&wrong_password, "not-the-password\n").unwrap();
    let text = TestDaemon::ldap_main_text(&ldap)
        .replace(
            &ldap["LDAP_BIND_PASSWORD_FILE"],
            &wrong_password.display().to_string(),
        )
        .replace(&ldap["LDAP_CA"], &wrong_ca.display().to_string());
    daemon.write_main(&text);
    daemon.start();
    daemon.wait_status("the first sync fails", |s| {
        common::step(s, "directory-sync")["state"] == "failed"
    });
    let password = std::fs::read_to_string(&ldap["LDAP_BIND_PASSWORD_FILE"]).unwrap();
    let ca = std::fs::read_to_string(&ldap["LDAP_CA"]).unwrap();
    let password = password.trim_end();
    let response = patch(
        &daemon,
        &serde_json::json!({"freeipa": {"password": password, "ca_pem": ca}}),
    );
    assert_eq!(response.status, 200, "{response:?}");
    let status = daemon.wait_status_within(
        "the sync with the given credentials",
        Duration::from_secs(60),
        |s| common::step(s, "directory-sync")["state"] == "done",
    );
    assert!(
        status["directory"]["active_users"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    // The password is a write-only value: stored 0600, never shown.
    let files = credential_files(&daemon);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    assert!(
        files
            .iter()
            .any(|f| std::fs::read_to_string(f).unwrap() == password)
    );
    for path in ["/v1/config", "/v1/events?limit=50", "/v1/status"] {
        let body = daemon.request(Method::GET, path, &[], None).body;
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains(password),
            "{path} shows the password: {text}"
        );
    }
    // Back to the files' wrong password and CA: the directory refuses them, so the values in
    // force stay; the same values again replace the stored files (no unused file is left).
    let before = daemon.get_json("/v1/config");
    let response = patch(
        &daemon,
        &serde_json::json!({"freeipa": {"password": null, "ca_pem": null}}),
    );
    assert_eq!(response.status, 409, "{response:?}");
    assert_eq!(
        problem(&response)["field"],
        "freeipa.ca_file",
        "{response:?}"
    );
    assert_eq!(daemon.get_json("/v1/config"), before);
    let response = patch(
        &daemon,
        &serde_json::json!({"freeipa": {"password": password, "ca_pem": ca}}),
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        credential_files(&daemon).len(),
        2,
        "{:?}",
        credential_files(&daemon)
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        !daemon.stderr().contains(password),
        "the log shows the password"
    );
}

/// Issue 19, item 4: a change of `freeipa.*` is checked against the real directory before it
/// is in force. A PATCH of a base DN that does not exist gets 422 naming freeipa.base_dn and
/// the DN; the same change through a drop-in and SIGHUP is refused as a reload, with status and
/// the event log saying why, and the values in force keep syncing.
#[test]
fn a_freeipa_change_is_checked_before_it_is_in_force() {
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let mut daemon = TestDaemon::new("");
    daemon.write_main(&TestDaemon::ldap_main_text(&ldap));
    daemon.start();
    let booted = daemon.wait_status("booted", common::booted);
    let revision = booted["config_revision"].clone();
    let before = daemon.get_json("/v1/config");
    let wrong = "dc=wrong,dc=test";
    let response = patch(&daemon, &serde_json::json!({"freeipa": {"base_dn": wrong}}));
    assert_eq!(response.status, 409, "{response:?}");
    let problem = problem(&response);
    assert_eq!(problem["field"], "freeipa.base_dn", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(wrong) && detail.contains("nothing was changed"),
        "{detail}"
    );
    assert_eq!(daemon.get_json("/v1/config"), before);

    daemon.write_dropin(
        "70-wrong.toml",
        &format!("[freeipa]\nbase_dn = \"{wrong}\"\n"),
    );
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let refused = daemon.wait_status("a refused reload", |s| !s["reload_error"].is_null());
    let error = refused["reload_error"].as_str().unwrap();
    assert!(
        error.contains("the ones in force are kept") && error.contains(wrong),
        "{error}"
    );
    assert_eq!(refused["config_revision"], revision);
    assert!(
        refused["degraded_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r
                .as_str()
                .is_some_and(|r| r.contains("the last config reload was refused"))),
        "{refused}"
    );
    let events = daemon.get_json("/v1/events?limit=20");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "config.reload_refused"
                && e["details"]["key"] == "freeipa.base_dn"),
        "{events}"
    );
    let sync = daemon
        .request(Method::POST, "/v1/sync", &[], None)
        .json()
        .unwrap();
    assert!(
        ["applied", "unchanged"].contains(&sync["run"]["outcome"].as_str().unwrap_or_default()),
        "the values in force still sync: {sync}"
    );
    daemon.stop();
}

fn tcp_daemon() -> TestDaemon {
    let mut daemon = TestDaemon::new("");
    daemon.write_main(&TestDaemon::tcp_main_text("\"127.0.0.0/8\""));
    daemon.start();
    daemon.wait_status("booted", common::booted);
    daemon
}

fn tcp_port(daemon: &TestDaemon) -> u16 {
    let status = daemon.get_json("/v1/status");
    let address = status["api_listener"]["address"].as_str().unwrap();
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Raises this process's soft open-file limit to its hard one (the flood needs thousands).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// Opens `count` connections from `source` to the listener and keeps them: idle, or sending
/// a TLS record header a byte at a time (trickling).
async fn flood(
    source: std::net::Ipv4Addr,
    port: u16,
    count: usize,
    trickle: bool,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::new();
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap();
        let Ok(mut stream) = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
        else {
            continue;
        };
        if trickle {
            let _ = stream.write_all(&[0x16]).await;
        }
        streams.push(stream);
    }
    streams
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// 3,000 idle and trickling connections from one allowed source: pangeod keeps at most its
/// per-source share open, a client from another source and a local admin on the socket are
/// served, no "Too many open files" appears, and the refusals are one log line, not thousands.
/// (The latencies under this load are measured by `cargo bench --bench api_flood`.)
#[test]
fn a_connection_flood_is_bounded_before_the_handshake() {
    let hard = raise_nofile();
    assert!(
        hard >= 4000,
        "the test needs 4,000 open files (hard limit {hard})"
    );
    let mut daemon = tcp_daemon();
    let port = tcp_port(&daemon);
    let token = daemon.api_token();
    let fds_before = open_fds(daemon.pid());
    let rt = common::mt_runtime();
    let (idle, trickling) = rt.block_on(async {
        let idle = flood([127, 0, 0, 2].into(), port, 2500, false).await;
        let trickling = flood([127, 0, 0, 2].into(), port, 500, true).await;
        (idle, trickling)
    });
    assert!(idle.len() + trickling.len() > 2900, "the flood connected");
    std::thread::sleep(Duration::from_millis(500));
    let fds_during = open_fds(daemon.pid());
    assert!(
        fds_during < fds_before + 100,
        "pangeod holds {fds_during} descriptors during the flood (before: {fds_before})"
    );
    // A client from another allowed source gets in, with its token, over TLS.
    let transport = client::Transport::tls(
        "localhost",
        port,
        &daemon.state_dir().join("tls/ca.pem"),
        Some(token),
    )
    .unwrap();
    let response = rt
        .block_on(client::call(
            &transport,
            Method::GET,
            "/v1/status",
            &[],
            None,
            Duration::from_secs(10),
        ))
        .unwrap();
    assert_eq!(response.status, 200);
    // A local admin too.
    assert_eq!(
        daemon.request(Method::GET, "/v1/status", &[], None).status,
        200
    );
    drop((idle, trickling));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    let log = daemon.stderr();
    assert!(!log.contains("Too many open files"), "{log}");
    let refusals = log
        .lines()
        .filter(|l| l.contains("admin API connection") && l.contains("refused"))
        .count();
    assert_eq!(refusals, 1, "one log line for the refused flood: {log}");
    assert!(log.contains("127.0.0.2"), "the line names the source");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The state database, its WAL, the state dir and the secret files are private whatever the
/// umask pangeod is started with (outside the unit, 0022 gave a world-readable state.db).
#[test]
fn state_and_secrets_are_private_whatever_the_umask() {
    let mut daemon = tcp_daemon_with_umask(0o022);
    // A write, so the WAL exists.
    let response = patch(&daemon, &serde_json::json!({"notebook": {"cpus": 2}}));
    assert_eq!(response.status, 200, "{response:?}");
    let state = daemon.state_dir();
    assert_eq!(mode(&state) & 0o077, 0, "{}", state.display());
    for name in ["state.db", "state.db-wal", "state.db-shm", "api-token"] {
        let path = state.join(name);
        assert!(path.exists(), "{}", path.display());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    daemon.stop();
}

fn tcp_daemon_with_umask(umask: u32) -> TestDaemon {
    let mut daemon = TestDaemon::new("");
    daemon.write_main(&TestDaemon::tcp_main_text("\"127.0.0.0/8\""));
    // The umask through a shell that then becomes pangeod (no unsafe pre_exec here).
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {umask:04o} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_pangeod"))
        .arg("--config")
        .arg(daemon.config_path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    daemon.start_command(command);
    daemon.wait_status("booted", common::booted);
    daemon
}

/// Runs `curl` on the admin socket as `user` (a real non-root account); the HTTP status, or
/// None when the socket cannot be reached.
fn curl_as(user: &str, socket: &std::path::Path) -> Option<u16> {
    let output = std::process::Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--unix-socket")
        .arg(socket)
        .arg("http://pangeod/v1/health")
        .output()
        .unwrap();
    let code: u16 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()?;
    (code != 0).then_some(code)
}

fn ensure_account(user: &str, group: Option<&str>) {
    let exists = std::process::Command::new("id")
        .arg(user)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let mut useradd = std::process::Command::new("useradd");
        useradd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if let Some(group) = group {
            useradd.args(["--groups", group]);
        }
        assert!(useradd.arg(user).status().unwrap().success());
    }
}

/// `api.socket_group` works under the shipped unit's `RuntimeDirectoryMode=0750`: a member of
/// the group reaches the socket, a non-member does not.
#[test]
fn the_socket_group_reaches_the_socket_and_no_one_else() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to make the test accounts");
        return;
    }
    let group = "pangeo-sec-admins";
    if nix::unistd::Group::from_name(group).unwrap().is_none() {
        assert!(
            std::process::Command::new("groupadd")
                .args(["--system", group])
                .status()
                .unwrap()
                .success()
        );
    }
    ensure_account("pangeo-sec-member", Some(group));
    ensure_account("pangeo-sec-other", None);
    let mut daemon = TestDaemon::new("");
    // As systemd lays it out: the test dir traversable, the runtime dir root:root 0750.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = daemon.dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    daemon.write_main(&TestDaemon::main_text().replace(
        "[api]\nsocket = \"run/admin.sock\"\n",
        &format!("[api]\nsocket = \"run/admin.sock\"\nsocket_group = \"{group}\"\n"),
    ));
    daemon.start();
    daemon.wait_status("booted", common::booted);
    let socket = daemon.socket();
    assert_eq!(curl_as("pangeo-sec-member", &socket), Some(200));
    assert_eq!(curl_as("pangeo-sec-other", &socket), None);
    assert_eq!(
        mode(&run) & 0o007,
        0,
        "others still cannot enter the runtime dir"
    );
    daemon.stop();
}

/// Input and messages: a DN with a line break, an escape sequence or braces is refused, and
/// the message shows it escaped (an ESC in an error must not repaint the admin's terminal); a
/// dotted key gets a message that says how to nest it.
#[test]
fn bad_input_is_refused_with_escaped_messages() {
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    for dn in [
        "dc=example\n,dc=test",
        "dc=ex\u{1b}[2Jample,dc=test",
        "dc={0},dc=test",
        "cn=\"\"\",dc=test",
    ] {
        let response = patch(&daemon, &serde_json::json!({"freeipa": {"base_dn": dn}}));
        assert_eq!(response.status, 422, "{dn:?}: {response:?}");
        let problem = problem(&response);
        assert_eq!(problem["field"], "freeipa.base_dn");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.chars().any(char::is_control),
            "the message carries a raw control character: {detail:?}"
        );
    }
    // Keys and values other than DNs, echoed back: escaped too, in the detail and the field.
    for body in [
        serde_json::json!({"notebook": {"cpu\u{1b}[31m": 2}}),
        serde_json::json!({"n\u{1b}x": {"a": 1}}),
        serde_json::json!({"hub": {"admin_users": ["a\u{1b}[2Jb"]}}),
        serde_json::json!({"freeipa": {"server": "h\u{1b}[2J:636"}}),
        serde_json::json!({"notebook": {"cpus": "x\u{7}y"}}),
    ] {
        let response = patch(&daemon, &body);
        assert_eq!(response.status, 422, "{body}: {response:?}");
        let problem = problem(&response);
        for part in ["detail", "field"] {
            let text = problem[part].as_str().unwrap_or_default();
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{body}: the {part} carries a raw control character: {text:?}"
            );
        }
    }
    let response = patch(&daemon, &serde_json::json!({"notebook.cpus": 2}));
    assert_eq!(response.status, 422, "{response:?}");
    let detail = problem(&response)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(r#"{"notebook": {"cpus": 2}}"#),
        "the message shows how to nest it: {detail}"
    );
    daemon.stop();
}

/// The "gone" users' names at the hub, page by page.
fn gone_in_hub(hub: &common::hub::HubFixture) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut offset = 0;
    loop {
        let (code, page) = hub.api("GET", &format!("/users?offset={offset}&limit=200"), None);
        assert_eq!(code, 200, "{page}");
        let users = page.as_array().unwrap();
        names.extend(
            users
                .iter()
                .filter_map(|u| u["name"].as_str())
                .filter(|n| n.starts_with("gone"))
                .map(str::to_string),
        );
        if users.len() < 200 {
            return names;
        }
        offset += 200;
    }
}

/// Every `hub.user-deleted` event's user, with repeats, and the open intents' users.
fn deletions_recorded(state_dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let state = pangeod::state::State::open(state_dir).unwrap();
    let mut deleted = Vec::new();
    let mut before = None;
    loop {
        let page = state.events(before, 1000).unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        deleted.extend(
            page.iter()
                .filter(|e| e.action == "hub.user-deleted")
                .map(|e| e.details["user"].as_str().unwrap().to_string()),
        );
    }
    let intents = state
        .intents()
        .unwrap()
        .into_iter()
        .filter(|i| i.action == "hub.user-deleted")
        .map(|i| i.user)
        .collect();
    (deleted, intents)
}

/// Item 4 of the security issue: a kill -9 in the middle of 1,000 removals at the real hub
/// leaves every deletion either recorded or written down as an intent, and the next run
/// records the rest, so the events match the hub one for one.
#[test]
fn kill_9_in_the_middle_of_1000_removals_loses_no_event() {
    const USERS: usize = 1000;
    let mut daemon = TestDaemon::new("");
    let Some(hub) = common::hub::HubFixture::for_daemon(&daemon) else {
        return;
    };
    // 1,000 hub users whom the user table knows as removed.
    let names: Vec<String> = (0..USERS).map(|i| format!("gone{i:04}")).collect();
    for batch in names.chunks(500) {
        let body = serde_json::json!({ "usernames": batch }).to_string();
        let (code, answer) = hub.api("POST", "/users", Some(&body));
        assert_eq!(code, 201, "{answer}");
    }
    {
        let state = pangeod::state::State::open(&daemon.state_dir()).unwrap();
        let members: Vec<pangeod::state::Member> = names
            .iter()
            .map(|name| pangeod::state::Member {
                name: name.clone(),
                uid: name.clone(),
                cn: name.clone(),
                mail: String::new(),
                disabled: false,
                admin_sources: vec![],
            })
            .collect();
        let run = pangeod::state::SyncRun::applied_now("test");
        state.apply_members(&members, &run).unwrap();
        state.apply_members(&[], &run).unwrap();
    }
    hub.attach(&daemon);
    daemon.start();

    // kill -9 once a good part is deleted.
    let started = Instant::now();
    loop {
        let left = gone_in_hub(&hub).len();
        if left <= USERS * 6 / 10 {
            assert!(
                left > 0,
                "all removals finished before the kill; the test proves nothing"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the removals did not progress: {left} left; {:#}",
            daemon.get_json("/v1/status")["hub"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait_exit(Duration::from_secs(10));
    let left = gone_in_hub(&hub);
    let deleted_at_hub: std::collections::BTreeSet<String> = names
        .iter()
        .filter(|n| !left.contains(*n))
        .cloned()
        .collect();
    let (events, intents) = deletions_recorded(&daemon.state_dir());
    eprintln!(
        "killed with {} deleted at the hub, {} events, {} open intents",
        deleted_at_hub.len(),
        events.len(),
        intents.len()
    );
    for user in &events {
        assert!(
            deleted_at_hub.contains(user),
            "an event for {user}, who is still at the hub"
        );
    }
    for user in &deleted_at_hub {
        assert!(
            events.contains(user) || intents.contains(user),
            "{user} was deleted at the hub with neither an event nor an intent"
        );
    }

    // The next pangeod finishes the removals and records what the killed one left.
    daemon.start();
    let started = Instant::now();
    while !gone_in_hub(&hub).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the removals were not finished after the restart: {:#}",
            daemon.get_json("/v1/status")["hub"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.stop();
    let (events, intents) = deletions_recorded(&daemon.state_dir());
    assert!(intents.is_empty(), "intents left: {intents:?}");
    let mut counted = std::collections::BTreeMap::<&str, usize>::new();
    for user in &events {
        *counted.entry(user.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    assert_eq!(
        counted.keys().copied().collect::<Vec<_>>(),
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        "one hub.user-deleted event per deleted user"
    );
}

/// A small tmpfs mounted for a test, detached when dropped (even with pangeod still in it).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` with one file, and returns it.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Item 6 of the security issue: a full state disk is reported as a full disk (507, naming
/// the disk and the fix, never "restore it from a backup"), status is degraded with the
/// reason, nothing half-done is kept, and freeing the space is all it takes.
#[test]
fn a_full_state_disk_is_reported_as_such_and_status_is_degraded() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs for the state needs root");
        return;
    }
    let mut daemon = TestDaemon::new("");
    let Some(_disk) = Tmpfs::mount(&daemon.state_dir(), "24m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    daemon.start();
    // This daemon's directory is not there, so status may be degraded for that; the disk
    // is the reason looked for here.
    let disk_reason = |status: &serde_json::Value| {
        status["degraded_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r.as_str()
                    .unwrap()
                    .contains("the disk holding the state database")
            })
    };
    let healthy = daemon.get_json("/v1/status");
    assert!(!disk_reason(&healthy), "{healthy:#}");

    let filler = fill(&daemon.state_dir());
    let status = daemon.get_json("/v1/status");
    assert_eq!(status["health"], "degraded", "{status:#}");
    let reasons = status["degraded_reasons"].to_string();
    assert!(
        reasons.contains("is full") && reasons.contains("df -h"),
        "{reasons}"
    );
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_pangeoctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DEGRADED: the disk holding the state database"),
        "{text}"
    );

    // Changes until SQLite needs a page the disk does not have (its WAL may hold a few).
    let before = revision(&daemon);
    let mut refused = None;
    let mut accepted = 0;
    for round in 0..400 {
        let response = patch(
            &daemon,
            &serde_json::json!({"notebook": {"cpus": 1 + round % 2}}),
        );
        if response.status == 200 {
            accepted += 1;
            continue;
        }
        refused = Some(response);
        break;
    }
    let refused = refused.expect("400 changes on a full disk were all accepted");
    let problem = problem(&refused);
    assert_eq!(refused.status, 507, "{problem}");
    assert_eq!(
        problem["type"], "urn:pangeod:problem:disk-full",
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("is full") && detail.contains("df -h"),
        "{detail}"
    );
    assert!(!detail.contains("backup"), "{detail}");
    // What was acknowledged is in force; the refused change is not.
    assert_eq!(
        revision(&daemon).as_i64().unwrap(),
        before.as_i64().unwrap() + accepted,
        "every acknowledged change has its revision, the refused one none"
    );

    std::fs::remove_file(&filler).unwrap();
    let status = daemon.get_json("/v1/status");
    assert!(!disk_reason(&status), "{status:#}");
    let response = patch(&daemon, &serde_json::json!({"notebook": {"cpus": 3}}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        daemon.get_json("/v1/config")["config"]["notebook"]["cpus"],
        3
    );
    daemon.stop();
}

/// Item 6 of the security issue: a directory that accepts connections and never answers (as a
/// hung FreeIPA does) costs an API request less than the API's 15 s deadline, and the answer
/// names the stalled system: the sync's own error names the server, or, when the deadline cut
/// the request, its 504 names what it waited on.
#[test]
fn a_stalled_directory_is_named_within_the_api_deadline() {
    for tls in ["plain", "ldaps"] {
        // Accepts, and then holds each connection without a word.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let mut daemon = TestDaemon::new("");
        daemon.write_main(&TestDaemon::main_text().replace(
            "server = \"localhost:636\"",
            &format!("server = \"127.0.0.1:{port}\"\ntls = \"{tls}\""),
        ));
        std::fs::write(daemon.dir.path().join("ipa-ca.pem"), ca_pem()).unwrap();
        daemon.start();
        // The boot's own sync waits on the trap first; let it fail, so the request below
        // makes a sync of its own.
        let started = Instant::now();
        while daemon.get_json("/v1/status")["directory"]["last_error"].is_null() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the boot sync did not fail"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        let response =
            daemon.request_within(Method::POST, "/v1/sync", &[], None, Duration::from_secs(30));
        let took = started.elapsed();
        let body = String::from_utf8_lossy(&response.body).to_string();
        eprintln!(
            "tls {tls}: POST /v1/sync answered {} after {took:?}: {body}",
            response.status
        );
        assert!(took < Duration::from_secs(16), "{took:?}");
        let server = format!("127.0.0.1:{port}");
        match response.status.as_u16() {
            200 => {
                let report: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(report["run"]["outcome"], "failed", "{report}");
                let error = report["run"]["error"].as_str().unwrap();
                assert!(error.contains(&server), "{error}");
            }
            504 => assert!(
                body.contains(&server) || body.contains("another directory sync"),
                "{body}"
            ),
            other => panic!("POST /v1/sync answered {other}: {body}"),
        }
        assert!(
            connections.load(Ordering::SeqCst) > 0,
            "the listener was never reached"
        );
        daemon.stop();
    }
}

/// Network namespaces of this test's own, removed when it ends, with the `/run/netns` mount
/// that `ip netns add` makes if there was none before (the machine is shared with the next
/// session and CI).
struct Netns {
    names: Vec<String>,
    run_netns_was_mounted: bool,
}

fn run_netns_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some("/run/netns"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", name])
                .status();
        }
        let empty = std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none());
        if !self.run_netns_was_mounted && empty && run_netns_mounted() {
            let _ = std::process::Command::new("umount")
                .arg("/run/netns")
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `f` on a thread of its own that has entered network namespace `name` (a network
/// namespace is per thread, and a process spawned from that thread starts in it).
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Connects from `source` to `target` in namespace `ns`; `Ok` with the server's line.
fn connect_from(ns: &str, source: &str, target: &str) -> std::io::Result<String> {
    let (source, target): (std::net::IpAddr, std::net::SocketAddr) =
        (source.parse().unwrap(), target.parse().unwrap());
    in_netns(ns, move || {
        common::runtime().block_on(async move {
            use tokio::io::AsyncReadExt;
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(source, 0))?;
            let mut stream = tokio::time::timeout(Duration::from_secs(3), socket.connect(target))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let mut line = String::new();
            stream.read_to_string(&mut line).await?;
            Ok(line)
        })
    })
}

/// Issue 17, item 3: the Kubernetes API server's port (which the admin kubeconfig names on the
/// external IP) admits the node, its pods and `api.admin_allowed_cidrs`, and resets every other
/// source, with the nftables rules pangeod loads before k3s starts (`k3s::firewall::apply`).
/// In two network namespaces of the test's own (a "node" with a listener on 6443, and a
/// "network" with addresses inside and outside the admin CIDR); the host's own rules are not
/// touched.
#[test]
fn the_apiserver_port_admits_the_admin_networks_and_refuses_other_sources() {
    use pangeod::k3s::firewall;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for network namespaces and nftables");
        return;
    }
    let tag = std::process::id();
    let (node, outside) = (format!("pgfw-node-{tag}"), format!("pgfw-net-{tag}"));
    let run_netns_was_mounted = run_netns_mounted();
    ip(&["netns", "add", &node]);
    let namespaces = Netns {
        names: vec![node.clone(), outside.clone()],
        run_netns_was_mounted,
    };
    ip(&["netns", "add", &outside]);
    ip(&[
        "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &outside,
    ]);
    for (ns, addresses) in [
        (&node, &["10.251.0.1/24", "10.42.0.1/16"][..]),
        // An admin's address, another address, and a pod's (k3s's cluster CIDR).
        (
            &outside,
            &["10.251.0.2/24", "10.251.0.3/24", "10.42.7.7/16"][..],
        ),
    ] {
        for address in addresses {
            ip(&["-n", ns, "addr", "add", address, "dev", "eth0"]);
        }
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The node's "API server": a listener on every address, as k3s's is.
    let listener = in_netns(&node, || {
        TcpListener::bind(("0.0.0.0", firewall::APISERVER_PORT)).unwrap()
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"apiserver\n");
        }
    });
    let api = format!("10.251.0.1:{}", firewall::APISERVER_PORT);
    let pod_route = format!("10.42.0.1:{}", firewall::APISERVER_PORT);
    let local = format!("127.0.0.1:{}", firewall::APISERVER_PORT);
    // Before: open to all.
    assert!(connect_from(&outside, "10.251.0.3", &api).is_ok());

    let admins: Vec<ipnet::IpNet> = vec!["10.251.0.2/32".parse().unwrap()];
    in_netns(&node, move || {
        firewall::apply(firewall::APISERVER_PORT, &admins)
    })
    .unwrap();
    assert_eq!(
        connect_from(&outside, "10.251.0.2", &api).unwrap(),
        "apiserver\n",
        "an admin network is let in"
    );
    let refused = connect_from(&outside, "10.251.0.3", &api).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "a source outside the admin networks gets a reset at once: {refused}"
    );
    assert!(
        connect_from(&outside, "10.42.7.7", &pod_route).is_ok(),
        "the pods (k3s's cluster CIDR) are let in"
    );
    assert!(
        connect_from(&node, "127.0.0.1", &local).is_ok(),
        "the node itself is let in"
    );

    // A reload with other admin networks replaces the rules whole (one table, one transaction).
    let admins: Vec<ipnet::IpNet> = vec!["10.251.0.3/32".parse().unwrap()];
    in_netns(&node, move || {
        firewall::apply(firewall::APISERVER_PORT, &admins)
    })
    .unwrap();
    assert!(connect_from(&outside, "10.251.0.3", &api).is_ok());
    assert_eq!(
        connect_from(&outside, "10.251.0.2", &api)
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let tables = in_netns(&node, || {
        std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "table inet pangeo_apiserver",
        "one table of pangeod's own"
    );
    drop(namespaces);
    assert!(
        run_netns_was_mounted || !run_netns_mounted(),
        "the /run/netns mount that ip netns made is gone"
    );
}
