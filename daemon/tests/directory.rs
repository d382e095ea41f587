//! Directory sync against a real 389 Directory Server shaped like FreeIPA
//! (integration-tests/fixtures/389ds). The test command starts the server once and sets
//! LDAP_WORKDIR; each test here reloads nothing, and undoes what it changes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use pangeod::config::{Config, Layer};
use pangeod::directory::{DirectoryError, DirectorySync};
use pangeod::state::{State, UserState};

mod common;

static SERIAL: Mutex<()> = Mutex::new(());

struct Fixture {
    env: BTreeMap<String, String>,
    _serial: MutexGuard<'static, ()>,
}

/// The running fixture, or None (with a loud message) when the test command did not start it.
fn fixture() -> Option<Fixture> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = common::ldap_env()?;
    Some(Fixture {
        env,
        _serial: serial,
    })
}

impl Fixture {
    fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} missing from the fixture env"))
    }

    /// A config for cluster `demo` against the fixture; `edit` rewrites the TOML.
    fn config(&self, dir: &tempfile::TempDir, edit: impl Fn(String) -> String) -> Config {
        let text = format!(
            r#"[cluster]
name = "demo"
external_ip = "192.0.2.10"
[freeipa]
server = "127.0.0.1:{port}"
tls = "ldaps"
base_dn = "{base}"
bind_dn = "{bind}"
password_file = "{password}"
ca_file = "{ca}"
[hub]
admin_users = ["admin"]
"#,
            port = self.get("LDAPS_PORT"),
            base = self.get("LDAP_BASE_DN"),
            bind = self.get("LDAP_BIND_DN"),
            password = self.get("LDAP_BIND_PASSWORD_FILE"),
            ca = self.get("LDAP_CA"),
        );
        let text = edit(text);
        let layer = Layer::from_str("test.toml", Some(dir.path().to_path_buf()), &text).unwrap();
        Config::from_layers(&[layer], &Default::default()).unwrap()
    }

    /// Changes the directory as Directory Manager, with all plugins live.
    fn modify(&self, ldif: &str) {
        common::ldap_modify(&self.env, ldif);
    }

    fn script(&self, name: &str, args: &[&str]) {
        let path = PathBuf::from(self.get("LDAP_FIXTURE_DIR")).join(name);
        let status = Command::new(&path)
            .arg(self.get("LDAP_WORKDIR"))
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{name} {args:?} failed");
    }

    /// Runs `undo` when dropped, so a failed assertion leaves the directory as it was.
    fn undo_on_drop(&self, undo: String) -> Undo<'_> {
        Undo {
            fixture: self,
            ldif: Some(undo),
        }
    }

    fn group_dn(&self, cn: &str) -> String {
        format!("cn={cn},{}", self.get("LDAP_GROUPS_DN"))
    }

    fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},{}", self.get("LDAP_USERS_DN"))
    }
}

struct Undo<'a> {
    fixture: &'a Fixture,
    ldif: Option<String>,
}

impl Undo<'_> {
    fn now(mut self) {
        if let Some(ldif) = self.ldif.take() {
            self.fixture.modify(&ldif);
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(ldif) = self.ldif.take() {
            self.fixture.modify(&ldif);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    state: Arc<State>,
    sync: DirectorySync,
    config: Config,
}

fn setup(f: &Fixture) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("state")).unwrap());
    let config = f.config(&dir, |t| t);
    let sync = DirectorySync::new(state.clone());
    Setup {
        _dir: dir,
        state,
        sync,
        config,
    }
}

fn user_state(state: &State, name: &str) -> Option<UserState> {
    state.user(name).unwrap().map(|u| u.state)
}

fn active_names(state: &State) -> Vec<String> {
    state
        .users(Some(UserState::Active), None, 100_000)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect()
}

#[test]
fn a_full_sync_finds_members_as_the_directory_defines_them() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    let report = rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    assert_eq!(report.run.outcome, "applied");

    // carol is three nested groups deep; ivan's cn is unicode; HeidiUpper is upper case.
    for name in [
        "admin",
        "alice",
        "bob",
        "carol",
        "heidiupper",
        "ivan",
        "judy",
    ] {
        assert_eq!(
            user_state(&s.state, name),
            Some(UserState::Active),
            "{name}"
        );
    }
    assert_eq!(s.state.user("ivan").unwrap().unwrap().cn, "Iván Ŝtrauß-李");
    assert_eq!(
        s.state.user("heidiupper").unwrap().unwrap().uid,
        "HeidiUpper"
    );
    // dave and erin are members but locked.
    assert_eq!(user_state(&s.state, "dave"), Some(UserState::Disabled));
    assert_eq!(user_state(&s.state, "erin"), Some(UserState::Disabled));
    // frank is only in another cluster's group; mallory in none.
    assert_eq!(user_state(&s.state, "frank"), None);
    assert_eq!(user_state(&s.state, "mallory"), None);

    // Admin rights and their sources.
    let sources = |name: &str| s.state.user(name).unwrap().unwrap().admin_sources;
    assert_eq!(sources("admin"), ["config"]);
    assert_eq!(sources("alice"), ["group"]);
    assert_eq!(sources("judy"), ["group"]);
    assert!(sources("bob").is_empty());

    // The generator's own account of the data agrees (its users-group members plus the
    // admins-group-only members, who also get in).
    let expect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(f.get("LDAP_WORKDIR")).join("data/expect.json"))
            .unwrap(),
    )
    .unwrap();
    let mut expected: Vec<String> = expect["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_lowercase())
        .collect();
    expected.extend(
        expect["admins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_lowercase()),
    );
    expected.sort();
    expected.dedup();
    assert_eq!(active_names(&s.state), expected);
}

#[test]
fn membership_changes_land_in_the_user_table() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    let users_group = f.group_dn("demo_notebook_users");

    // mallory is added, bob removed, alice disabled, dave re-enabled.
    let change = format!(
        "dn: {users_group}\nchangetype: modify\nadd: member\nmember: {}\n-\ndelete: member\nmember: {}\n\n\
         dn: {}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n\n\
         dn: {}\nchangetype: modify\ndelete: nsAccountLock\n",
        f.user_dn("mallory"),
        f.user_dn("bob"),
        f.user_dn("alice"),
        f.user_dn("dave")
    );
    let undo = format!(
        "dn: {users_group}\nchangetype: modify\nadd: member\nmember: {}\n-\ndelete: member\nmember: {}\n\n\
         dn: {}\nchangetype: modify\ndelete: nsAccountLock\n\n\
         dn: {}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n",
        f.user_dn("bob"),
        f.user_dn("mallory"),
        f.user_dn("alice"),
        f.user_dn("dave")
    );
    f.modify(&change);
    let guard = f.undo_on_drop(undo);
    let report = rt.block_on(s.sync.run(&s.config, "test", false)).unwrap();
    assert_eq!(
        report.run.outcome, "applied",
        "the change check saw the change"
    );
    assert_eq!(report.changes.added, ["mallory"]);
    assert_eq!(report.changes.removed, ["bob"]);
    assert_eq!(report.changes.disabled, ["alice"]);
    assert_eq!(report.changes.reenabled, ["dave"]);
    assert_eq!(user_state(&s.state, "bob"), Some(UserState::Removed));
    assert_eq!(user_state(&s.state, "alice"), Some(UserState::Disabled));
    assert!(
        s.state
            .user("alice")
            .unwrap()
            .unwrap()
            .admin_sources
            .is_empty(),
        "a disabled user is no admin"
    );
    let events: Vec<String> = s
        .state
        .events(None, 20)
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.details["user"]))
        .collect();
    assert!(
        events.contains(&"user.removed \"bob\"".to_string()),
        "{events:?}"
    );

    // Undo, and the next sync puts everyone back.
    guard.now();
    let report = rt.block_on(s.sync.run(&s.config, "test", false)).unwrap();
    assert_eq!(report.changes.reenabled, ["alice", "bob"]);
    assert_eq!(report.changes.removed, ["mallory"]);
    assert_eq!(user_state(&s.state, "alice"), Some(UserState::Active));
}

#[test]
fn a_no_change_sync_is_a_cheap_check() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    // An unrelated entry changes: still no change for the sync.
    f.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: description\ndescription: touched\n",
        f.user_dn("mallory")
    ));
    let report = rt.block_on(s.sync.run(&s.config, "test", false)).unwrap();
    assert_eq!(report.run.outcome, "unchanged");
    // A nested group three levels down changes: that is a change.
    f.modify(&format!(
        "dn: {}\nchangetype: modify\ndelete: member\nmember: {}\n",
        f.group_dn("demo_nest_a"),
        f.user_dn("carol")
    ));
    let guard = f.undo_on_drop(format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {}\n",
        f.group_dn("demo_nest_a"),
        f.user_dn("carol")
    ));
    let report = rt.block_on(s.sync.run(&s.config, "test", false)).unwrap();
    assert_eq!(report.run.outcome, "applied");
    assert_eq!(report.changes.removed, ["carol"]);
    guard.now();
    let report = rt.block_on(s.sync.run(&s.config, "test", false)).unwrap();
    assert_eq!(report.changes.reenabled, ["carol"]);
}

/// Runs a first good sync, then a failing one; asserts that nothing changed and the error.
fn assert_failsafe(
    f: &Fixture,
    edit: impl Fn(String) -> String,
    during: impl FnOnce(),
    after: impl FnOnce(),
    check: impl Fn(&DirectoryError) -> bool,
) {
    let s = setup(f);
    let rt = runtime();
    rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    let before = active_names(&s.state);
    let broken = f.config(&s._dir, edit);
    during();
    let outcome = rt.block_on(s.sync.run(&broken, "test", true));
    after();
    let error = outcome.expect_err("the sync must fail");
    assert!(check(&error), "unexpected error: {error}");
    // Status labels say what was seen: "unreachable" only for a server that was not reached.
    assert_eq!(
        error.label() == "FreeIPA unreachable",
        matches!(error, DirectoryError::Connect { .. }),
        "label {:?} for {error}",
        error.label()
    );
    assert_eq!(
        active_names(&s.state),
        before,
        "a directory error changed the user table"
    );
    let status = s.sync.status().borrow().clone();
    assert_eq!(status.last_run.unwrap().outcome, "failed");
    assert_eq!(
        status.last_error.as_deref(),
        Some(error.to_string().as_str())
    );
}

#[test]
fn a_wrong_bind_password_revokes_nobody() {
    let Some(f) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let original = f.get("LDAP_BIND_PASSWORD_FILE").to_string();
    assert_failsafe(
        &f,
        |t| t.replace(&original, wrong.to_str().unwrap()),
        || {},
        || {},
        |e| {
            matches!(e, DirectoryError::Bind { rc: 49, .. })
                && e.to_string()
                    .contains("check freeipa.bind_dn and the password in freeipa.password_file")
        },
    );
}

#[test]
fn a_wrong_base_dn_revokes_nobody() {
    let Some(f) = fixture() else { return };
    assert_failsafe(
        &f,
        |t| {
            t.replace(
                "base_dn = \"dc=example,dc=test\"",
                "base_dn = \"dc=wrong,dc=test\"",
            )
        },
        || {},
        || {},
        |e| matches!(e, DirectoryError::Missing { key, .. } if key == "freeipa.base_dn"),
    );
}

#[test]
fn a_missing_group_revokes_nobody() {
    let Some(f) = fixture() else { return };
    assert_failsafe(
        &f,
        |t| t.replace("name = \"demo\"", "name = \"nosuch\""),
        || {},
        || {},
        |e| {
            e.to_string().starts_with(
                "cn=nosuch_notebook_users,cn=groups,cn=accounts,dc=example,dc=test does not exist",
            )
        },
    );
}

#[test]
fn a_ca_that_does_not_match_revokes_nobody() {
    let Some(f) = fixture() else { return };
    let ca = f.get("LDAP_CA").to_string();
    let wrong = f.get("LDAP_WRONG_CA").to_string();
    assert_failsafe(
        &f,
        |t| t.replace(&ca, &wrong),
        || {},
        || {},
        |e| matches!(e, DirectoryError::Tls { .. }),
    );
}

#[test]
fn starttls_on_the_plain_port_works() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let ldaps_port = f.get("LDAPS_PORT").to_string();
    let ldap_port = f.get("LDAP_PORT").to_string();
    let starttls = f.config(&s._dir, |t| {
        t.replace(&ldaps_port, &ldap_port)
            .replace("tls = \"ldaps\"", "tls = \"starttls\"")
    });
    let report = runtime()
        .block_on(s.sync.run(&starttls, "test", true))
        .unwrap();
    assert!(report.run.members > 5);
}

#[test]
fn an_expired_certificate_revokes_nobody() {
    let Some(f) = fixture() else { return };
    assert_failsafe(
        &f,
        |t| t,
        || f.script("set-cert.sh", &["expired"]),
        || f.script("set-cert.sh", &["valid"]),
        |e| matches!(e, DirectoryError::Tls { reason, .. } if reason.to_lowercase().contains("expired")),
    );
}

#[test]
fn a_server_that_is_down_revokes_nobody() {
    let Some(f) = fixture() else { return };
    assert_failsafe(
        &f,
        |t| t,
        || f.script("stop.sh", &[]),
        || f.script("start.sh", &[]),
        |e| matches!(e, DirectoryError::Connect { .. }),
    );
}

#[test]
fn a_drop_of_more_than_half_is_held_until_confirmed() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    let before = active_names(&s.state);
    // The cluster is renamed on the FreeIPA side by mistake: only the configured admin is left.
    let emptied = f.config(&s._dir, |t| {
        t.replace("name = \"demo\"", "name = \"othercluster\"")
    });
    let report = rt.block_on(s.sync.run(&emptied, "test", true)).unwrap();
    assert_eq!(report.run.outcome, "held");
    // Nobody is removed; the other group's members (frank and two more) are added at once.
    let after = active_names(&s.state);
    let added: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        before.iter().all(|n| after.contains(n)),
        "a held result removes nobody"
    );
    assert_eq!(added.len() as i64, report.run.added);
    assert!(added.iter().any(|n| n.as_str() == "frank"), "{added:?}");
    let pending = s.sync.status().borrow().pending.clone().unwrap();
    assert_eq!(pending.active_before, before.len() as i64);
    assert!(pending.would_remove > before.len() / 2);
    let confirmed = rt.block_on(s.sync.confirm()).unwrap().unwrap();
    assert_eq!(confirmed.run.trigger, "confirm");
    assert!(active_names(&s.state).len() < before.len() / 2);
    assert!(s.sync.status().borrow().pending.is_none());
}

#[test]
fn the_size_limit_is_an_error_not_a_short_list() {
    let Some(f) = fixture() else { return };
    // FreeIPA's default limits stop a service account at a few thousand entries; here the same
    // per-account limits are set low so that the member search runs into them.
    let bind_dn = f.get("LDAP_BIND_DN").to_string();
    let limit = |value: &str| {
        f.modify(&format!(
            "dn: {bind_dn}\nchangetype: modify\nreplace: nsSizeLimit\nnsSizeLimit: {value}\n-\nreplace: nsPagedSizeLimit\nnsPagedSizeLimit: {value}\n"
        ))
    };
    let granted = f.get("LDAP_LIMITS_GRANTED") == "1";
    assert_failsafe(
        &f,
        |t| t,
        || limit("5"),
        || {
            if granted {
                limit("-1");
            } else {
                f.modify(&format!(
                    "dn: {bind_dn}\nchangetype: modify\ndelete: nsSizeLimit\n-\ndelete: nsPagedSizeLimit\n"
                ));
            }
        },
        |e| {
            let text = e.to_string();
            // The result code and every limit to grant, and no empty "()" (issue 19, item 3).
            matches!(e, DirectoryError::SizeLimit { .. })
                && e.label() == "a FreeIPA limit cut the member search short"
                && (text.contains("LDAP result 4, sizeLimitExceeded")
                    || text.contains("LDAP result 11, adminLimitExceeded"))
                && [
                    "nsSizeLimit,",
                    "nsPagedSizeLimit,",
                    "nsLookThroughLimit,",
                    "nsPagedLookThroughLimit",
                    "nsIDListScanLimit",
                ]
                .iter()
                .all(|limit| text.contains(limit))
                && !text.contains("()")
        },
    );
}

#[test]
fn the_daemon_syncs_at_boot_and_serves_users_sync_and_admins() {
    let Some(f) = fixture() else { return };
    let mut daemon = common::TestDaemon::new("");
    let text = common::TestDaemon::main_text()
        .replace("name = \"test\"", "name = \"demo\"")
        .replace(
            "server = \"localhost:636\"",
            &format!("server = \"127.0.0.1:{}\"", f.get("LDAPS_PORT")),
        )
        .replace(
            "password_file = \"ipa-password\"",
            &format!("password_file = \"{}\"", f.get("LDAP_BIND_PASSWORD_FILE")),
        )
        .replace(
            "ca_file = \"ipa-ca.pem\"",
            &format!("ca_file = \"{}\"", f.get("LDAP_CA")),
        );
    daemon.write_main(&text);
    daemon.start();
    let status = daemon.wait_status("ready", |s| s["phase"] == "ready");
    assert!(
        common::step(&status, "directory-sync")["message"]
            .as_str()
            .unwrap()
            .contains("active users (applied)")
    );
    assert!(status["directory"]["active_users"].as_i64().unwrap() > 5);

    let users = daemon.get_json("/v1/users?state=disabled");
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"dave") && names.contains(&"erin"),
        "{names:?}"
    );
    assert_eq!(daemon.get_json("/v1/users/Carol")["state"], "active");
    assert_eq!(
        daemon
            .request(hyper::Method::GET, "/v1/users/mallory", &[], None)
            .status,
        404
    );

    // Admins through the API: only for active users, recorded, and revocable.
    assert_eq!(
        daemon
            .request(hyper::Method::PUT, "/v1/admins/mallory", &[], None)
            .status,
        404
    );
    let granted = daemon
        .request(hyper::Method::PUT, "/v1/admins/bob", &[], None)
        .json()
        .unwrap();
    assert_eq!(granted["changed"], true);
    assert_eq!(
        daemon.get_json("/v1/users/bob")["admin_sources"],
        serde_json::json!(["api"])
    );
    let report = daemon
        .request(hyper::Method::POST, "/v1/sync", &[], None)
        .json()
        .unwrap();
    assert_eq!(report["run"]["outcome"], "applied");
    assert_eq!(
        daemon.get_json("/v1/users/bob")["admin_sources"],
        serde_json::json!(["api"]),
        "a sync keeps API admins"
    );
    assert_eq!(
        daemon
            .request(hyper::Method::DELETE, "/v1/admins/bob", &[], None)
            .status,
        200
    );
    assert_eq!(
        daemon
            .request(hyper::Method::DELETE, "/v1/admins/bob", &[], None)
            .status,
        404
    );
    assert_eq!(
        daemon
            .request(hyper::Method::POST, "/v1/sync/confirm", &[], None)
            .status,
        409
    );

    let ctl = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_pangeoctl"))
            .arg("--socket")
            .arg(daemon.socket())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = ctl(&["users", "--state", "active"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("alice ") && l.ends_with("admin (group)")),
        "{out}"
    );
    let (code, out) = ctl(&["sync"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("sync applied: "), "{out}");
    let (code, out) = ctl(&["admins", "add", "carol"]);
    assert_eq!((code, out.trim()), (Some(0), "carol: changed"));
    let (code, _) = ctl(&["admins", "remove", "carol"]);
    assert_eq!(code, Some(0));
    daemon.stop();
}

#[test]
fn content_sync_reports_a_removal_within_two_seconds() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    let changes = Arc::new(tokio::sync::Notify::new());
    let config = Arc::new(s.config.clone());
    rt.block_on(async {
        let watcher = tokio::spawn(pangeod::directory::watch_directory(config, changes.clone()));
        // Let the refresh phase finish.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let users_group = f.group_dn("demo_notebook_users");
        f.modify(&format!(
            "dn: {users_group}\nchangetype: modify\ndelete: member\nmember: {}\n",
            f.user_dn("bob")
        ));
        let _undo = f.undo_on_drop(format!(
            "dn: {users_group}\nchangetype: modify\nadd: member\nmember: {}\n",
            f.user_dn("bob")
        ));
        let started = std::time::Instant::now();
        let notified =
            tokio::time::timeout(std::time::Duration::from_secs(2), changes.notified()).await;
        watcher.abort();
        assert!(notified.is_ok(), "no change notification within 2 s");
        eprintln!(
            "content sync reported the removal after {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn a_server_killed_in_the_middle_of_a_sync_revokes_nobody() {
    let Some(f) = fixture() else { return };
    let pidfile = f.get("LDAP_PIDFILE").to_string();
    let killer = Mutex::new(None);
    assert_failsafe(
        &f,
        |t| t,
        || {
            // The sync starts right after this returns; the server freezes under it, then dies.
            let pidfile = pidfile.clone();
            *killer.lock().unwrap() = Some(std::thread::spawn(move || {
                let pid: i32 = std::fs::read_to_string(&pidfile)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let pid = nix::unistd::Pid::from_raw(pid);
                std::thread::sleep(std::time::Duration::from_millis(20));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(500));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
                // ns-slapd refuses to start while its lock names a live process: wait until
                // the killed one is gone.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while std::path::Path::new(&format!("/proc/{pid}")).exists()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }));
        },
        || {
            if let Some(killer) = killer.lock().unwrap().take() {
                killer.join().unwrap();
            }
            f.script("start.sh", &[]);
        },
        |e| {
            matches!(
                e,
                DirectoryError::Connect { .. }
                    | DirectoryError::Tls { .. }
                    | DirectoryError::Timeout { .. }
            )
        },
    );
}

#[test]
fn a_config_change_that_moves_the_tree_forces_a_full_read() {
    let Some(f) = fixture() else { return };
    let s = setup(&f);
    let rt = runtime();
    rt.block_on(s.sync.run(&s.config, "test", true)).unwrap();
    assert_eq!(
        rt.block_on(s.sync.run(&s.config, "test", false))
            .unwrap()
            .run
            .outcome,
        "unchanged"
    );
    // bob becomes a configured admin: nothing changed in the directory, but the answer did.
    let more_admins = f.config(&s._dir, |t| {
        t.replace(
            "admin_users = [\"admin\"]",
            "admin_users = [\"admin\", \"bob\"]",
        )
    });
    let report = rt
        .block_on(s.sync.run(&more_admins, "test", false))
        .unwrap();
    assert_eq!(report.run.outcome, "applied");
    assert_eq!(report.changes.admin_changed, ["bob"]);
    assert_eq!(
        s.state.user("bob").unwrap().unwrap().admin_sources,
        ["config"]
    );
}
