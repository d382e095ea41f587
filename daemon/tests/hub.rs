//! The hub follows the directory, against real servers: the FreeIPA-shaped 389-ds fixture
//! (started once by the test command, LDAP_WORKDIR), and a real JupyterHub,
//! configurable-http-proxy and dask-gateway-server started here by the hub fixture's scripts
//! on the hub config pangeod renders. pangeod runs as its own process with
//! `hub.api_url`/`hub.api_token_file` pointing at the fixture's hub.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

mod common;

use common::hub::{HubFixture, curl_json};

/// One hub, one daemon and one directory at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Setup {
    ldap: BTreeMap<String, String>,
    hub: HubFixture,
    daemon: common::TestDaemon,
    _serial: MutexGuard<'static, ()>,
}

fn setup() -> Option<Setup> {
    setup_with("")
}

/// [`setup`] with `extra` appended to pangeod's main config file (which the hub's config is
/// rendered from).
fn setup_with(extra: &str) -> Option<Setup> {
    setup_with_hub(extra, "")
}

/// A setup whose hub config gets `hub_py` appended.
fn setup_with_hub(extra: &str, hub_py: &str) -> Option<Setup> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ldap = common::ldap_env()?;
    let mut daemon = common::TestDaemon::new("");
    daemon.write_main(&format!(
        "{}{extra}",
        common::TestDaemon::ldap_main_text(&ldap)
    ));
    // The hub runs the config pangeod renders from this very config.
    let hub = HubFixture::for_daemon_with(&daemon, hub_py)?;
    hub.attach(&daemon);
    daemon.start();
    Some(Setup {
        ldap,
        hub,
        daemon,
        _serial: serial,
    })
}

impl Setup {
    fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},{}", self.ldap["LDAP_USERS_DN"])
    }

    fn group_dn(&self, cn: &str) -> String {
        format!("cn={cn},{}", self.ldap["LDAP_GROUPS_DN"])
    }

    /// Adds (true) or removes a user as a direct member of a group.
    fn membership(&self, group: &str, uid: &str, add: bool) {
        common::ldap_modify(
            &self.ldap,
            &format!(
                "dn: {}\nchangetype: modify\n{}: member\nmember: {}\n",
                self.group_dn(group),
                if add { "add" } else { "delete" },
                self.user_dn(uid)
            ),
        );
    }

    /// The hub's API as the `pangeo-appliance` service (curl: the tests check the hub, not
    /// pangeod's client). Returns the status and the JSON body.
    fn hub_api(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.hub.get("HUB_API_URL"));
        curl_json(method, &url, token, body)
    }

    fn admin_token(&self) -> String {
        self.hub.get("HUB_ADMIN_TOKEN").to_string()
    }

    /// The hub's user, or None.
    fn hub_user(&self, name: &str) -> Option<Value> {
        let (code, user) =
            self.hub_api("GET", &format!("/users/{name}"), &self.admin_token(), None);
        match code {
            200 => Some(user),
            404 => None,
            other => panic!("GET /users/{name} answered {other}: {user}"),
        }
    }

    /// Polls until `check` holds, printing what it waited for.
    fn eventually(&self, what: &str, within: Duration, check: impl Fn() -> bool) {
        let started = Instant::now();
        while started.elapsed() < within {
            if check() {
                eprintln!("{what}: after {:?}", started.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: not within {within:?}; pangeod's hub status: {:#}",
            self.daemon.get_json("/v1/status")["hub"]
        );
    }

    fn sync(&self) {
        let report = self
            .daemon
            .request(Method::POST, "/v1/sync", &[], None)
            .json()
            .unwrap();
        assert_eq!(report["run"]["outcome"], "applied", "{report}");
    }

    /// A new API token for `user`, made by the admin service.
    fn user_token(&self, user: &str) -> String {
        let (code, token) = self.hub_api(
            "POST",
            &format!("/users/{user}/tokens"),
            &self.admin_token(),
            Some(r#"{"note": "test"}"#),
        );
        assert_eq!(code, 201, "{token}");
        token["token"].as_str().unwrap().to_string()
    }

    /// Starts `user`'s server with pangeoctl and waits until the hub says it runs.
    fn server_running(&self, user: &str) {
        let (code, out) = self.ctl(&["server", "start", user]);
        assert_eq!(code, Some(0), "{out}");
        self.eventually(
            &format!("{user}'s server runs"),
            Duration::from_secs(60),
            || {
                self.hub_user(user)
                    .is_some_and(|u| u["server"].is_string() && u["pending"].is_null())
            },
        );
    }

    /// The status of a request to the user's own server (through the proxy) with their token.
    fn user_server(
        &self,
        user: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}/user/{user}{path}", self.hub.get("HUB_URL"));
        curl_json(method, &url, token, body)
    }

    fn ctl(&self, args: &[&str]) -> (Option<i32>, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_pangeoctl"))
            .arg("--socket")
            .arg(self.daemon.socket())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    fn first_enforcement(&self) {
        self.eventually(
            "the first hub sync made the members hub users",
            Duration::from_secs(60),
            || self.hub_user("alice").is_some_and(|u| u["admin"] == true),
        );
    }
}

/// Processes working in `home`: the fixture's spawner starts a user's server there.
fn server_processes(home: &std::path::Path) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == home))
        .count()
}

/// Undoes directory changes even when an assertion fails.
struct Undo<'a> {
    setup: &'a Setup,
    changes: Vec<(&'static str, &'static str, bool)>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for (group, uid, add) in self.changes.drain(..) {
            // Restoring is "make it so": ldapmodify fails on an add of an existing value.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.setup.membership(group, uid, add)
            }));
        }
    }
}

#[test]
fn the_hub_follows_the_directory_through_a_users_lifecycle() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    // Members are hub users before their first login, admins as computed, and nobody else.
    assert_eq!(
        s.hub_user("carol").unwrap()["admin"],
        false,
        "nested member"
    );
    assert_eq!(s.hub_user("judy").unwrap()["admin"], true, "admins group");
    assert!(s.hub_user("dave").is_none(), "disabled: no hub user");
    assert!(s.hub_user("mallory").is_none(), "not a member");
    let users = s.daemon.get_json("/v1/users?state=active&limit=1000");
    assert_eq!(users["hub_error"], Value::Null, "{users}");
    let alice = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["hub"]["admin"], true);
    assert_eq!(alice["hub"]["server"], "stopped");

    let mut undo = Undo {
        setup: &s,
        changes: vec![],
    };
    // 1. Added to the users group: a hub user.
    s.membership("demo_notebook_users", "mallory", true);
    undo.changes.push(("demo_notebook_users", "mallory", false));
    s.sync();
    s.eventually("mallory is a hub user", Duration::from_secs(20), || {
        s.hub_user("mallory").is_some()
    });
    assert_eq!(s.hub_user("mallory").unwrap()["admin"], false);

    // 2. Added to the admins group: admin.
    s.membership("demo_notebook_admins", "mallory", true);
    undo.changes
        .push(("demo_notebook_admins", "mallory", false));
    s.sync();
    s.eventually("mallory is admin", Duration::from_secs(20), || {
        s.hub_user("mallory").is_some_and(|u| u["admin"] == true)
    });

    // 3. She logs in, her server starts (through pangeoctl), and she writes a file.
    let jar = s.daemon.dir.path().join("mallory.cookies");
    let jar = s
        .hub
        .login("mallory", "pw-mallory", &jar)
        .expect("mallory, a member, logs in");
    assert_eq!(s.hub.get_with_cookie("/hub/home", &jar), 200);
    let (code, out) = s.ctl(&["server", "start", "mallory"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("mallory: "), "{out}");
    s.eventually("mallory's server runs", Duration::from_secs(60), || {
        s.hub_user("mallory")
            .is_some_and(|u| u["server"].is_string() && u["pending"].is_null())
    });
    let (code, out) = s.ctl(&["servers"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("mallory ") && l.contains("running")),
        "{out}"
    );
    let home = std::path::Path::new(s.hub.get("HUB_HOMES")).join("mallory");
    assert!(
        server_processes(&home) > 0,
        "her server runs as a process in her home"
    );
    let token = s.user_token("mallory");
    let (code, body) = s.user_server(
        "mallory",
        "PUT",
        "/api/contents/kept.txt",
        &token,
        Some(r#"{"type": "file", "format": "text", "content": "still here"}"#),
    );
    assert!(
        code == 200 || code == 201,
        "writing the file: {code} {body}"
    );

    // 4. Removed from the group: server stopped, token and cookie dead, login refused.
    s.membership("demo_notebook_users", "mallory", false);
    s.membership("demo_notebook_admins", "mallory", false);
    undo.changes.clear();
    s.sync();
    s.eventually(
        "mallory's hub user is gone",
        Duration::from_secs(30),
        || s.hub_user("mallory").is_none(),
    );
    let (code, _) = s.hub_api("GET", "/user", &token, None);
    assert_eq!(code, 403, "her token no longer works");
    assert_eq!(server_processes(&home), 0, "her server process is gone");
    assert_ne!(
        s.hub.get_with_cookie("/hub/home", &jar),
        200,
        "her login cookie no longer works"
    );
    assert!(
        s.hub.login("mallory", "pw-mallory", &jar).is_none(),
        "she cannot log in"
    );
    let events = s.daemon.get_json("/v1/events?limit=50");
    let deleted = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "hub.user-deleted" && e["details"]["user"] == "mallory")
        .unwrap_or_else(|| panic!("no hub.user-deleted event: {events}"));
    assert_eq!(deleted["details"]["home_volume"], "kept");
    assert_eq!(deleted["details"]["server_stopped"], true);
    assert_eq!(deleted["details"]["tokens"], "deleted with the hub user");

    // 5. Added back: in again, and the file is still in her home.
    s.membership("demo_notebook_users", "mallory", true);
    undo.changes.push(("demo_notebook_users", "mallory", false));
    s.sync();
    s.eventually(
        "mallory is a hub user again",
        Duration::from_secs(20),
        || s.hub_user("mallory").is_some(),
    );
    assert_eq!(s.hub_user("mallory").unwrap()["admin"], false);
    assert!(s.hub.login("mallory", "pw-mallory", &jar).is_some());
    let started = s
        .daemon
        .request(Method::POST, "/v1/users/mallory/server", &[], None);
    assert!(
        started.status == 200 || started.status == 202,
        "{}: {:?}",
        started.status,
        started.json()
    );
    s.eventually(
        "mallory's server runs again",
        Duration::from_secs(60),
        || {
            s.hub_user("mallory")
                .is_some_and(|u| u["server"].is_string() && u["pending"].is_null())
        },
    );
    let token = s.user_token("mallory");
    let (code, file) = s.user_server("mallory", "GET", "/api/contents/kept.txt", &token, None);
    assert_eq!(code, 200, "{file}");
    assert_eq!(file["content"], "still here");
    let stopped = s
        .daemon
        .request(Method::DELETE, "/v1/users/mallory/server", &[], None);
    assert!(stopped.status == 200 || stopped.status == 202);
    drop(undo);
}

#[test]
fn a_hub_that_is_down_during_a_sync_is_enforced_later() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    assert!(s.hub_user("bob").is_some());
    s.hub.hub_process("stop");
    s.membership("demo_notebook_users", "bob", false);
    let _undo = Undo {
        setup: &s,
        changes: vec![("demo_notebook_users", "bob", true)],
    };
    s.sync();
    // The directory says bob is gone; the hub cannot be told yet, and says so.
    s.daemon
        .wait_status_within("the hub sync's error", Duration::from_secs(30), |status| {
            status["hub"]["last_error"].is_string()
        });
    let refused = s
        .daemon
        .request(Method::POST, "/v1/users/alice/server", &[], None);
    assert_eq!(refused.status, 503);
    let problem = refused.json().unwrap();
    assert_eq!(problem["type"], "urn:pangeod:problem:hub-unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("hub"),
        "{problem}"
    );
    let unknown = s
        .daemon
        .request(Method::POST, "/v1/users/nobody-here/server", &[], None);
    assert_eq!(unknown.status, 404, "unknown to the directory");

    // The hub comes back; bob's removal happens without anyone asking again.
    s.hub.hub_process("start");
    s.eventually(
        "bob's hub user is deleted after the hub came back",
        Duration::from_secs(60),
        || s.hub_user("bob").is_none(),
    );
    assert!(s.hub_user("alice").is_some(), "nobody else was touched");
}

#[test]
fn after_a_hub_restart_the_admins_are_still_right() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    // An admin right from the API, on top of the admins group's.
    let granted = s.daemon.request(Method::PUT, "/v1/admins/bob", &[], None);
    assert_eq!(granted.status, 200);
    s.eventually("bob is admin", Duration::from_secs(20), || {
        s.hub_user("bob").is_some_and(|u| u["admin"] == true)
    });
    s.hub.hub_process("restart");
    // Straight after the restart, before pangeod's next run: the hub kept the flags.
    for (name, admin) in [
        ("alice", true),
        ("judy", true),
        ("bob", true),
        ("carol", false),
    ] {
        assert_eq!(
            s.hub_user(name).unwrap()["admin"],
            admin,
            "{name} after the restart"
        );
    }
    let revoked = s
        .daemon
        .request(Method::DELETE, "/v1/admins/bob", &[], None);
    assert_eq!(revoked.status, 200);
    s.eventually("bob is no longer admin", Duration::from_secs(20), || {
        s.hub_user("bob").is_some_and(|u| u["admin"] == false)
    });
}

/// Directory entries a test adds (with their membership of the users group), deleted again
/// even when an assertion fails.
struct AddedUsers<'a> {
    setup: &'a Setup,
    uids: Vec<&'static str>,
}

impl AddedUsers<'_> {
    fn add(&mut self, uid: &'static str) {
        let dn = self.setup.user_dn(uid);
        common::ldap_modify(
            &self.setup.ldap,
            &format!(
                "dn: {dn}\nchangetype: add\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalperson\nobjectClass: inetorgperson\nobjectClass: inetuser\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: pw-{uid}\n"
            ),
        );
        self.uids.push(uid);
        self.setup.membership("demo_notebook_users", uid, true);
    }
}

impl Drop for AddedUsers<'_> {
    fn drop(&mut self) {
        for uid in self.uids.drain(..) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.setup.membership("demo_notebook_users", uid, false);
                common::ldap_modify(
                    &self.setup.ldap,
                    &format!("dn: {}\nchangetype: delete\n", self.setup.user_dn(uid)),
                );
            }));
        }
    }
}

/// Issue 19, item 1: the sync and the login form follow one rule for user names (FreeIPA's).
/// Members named `Mixed.Case` (typed either way: one hub user), `9lives`, `_svc` and `a.b-c`
/// get a hub user and log in through the real form; a uid that no hub can hold (`sl/ash`) is
/// skipped by the sync, named in status and the event log, refused at login, and holds back
/// no one: a new member beside it still gets a hub user.
#[test]
fn one_username_rule_for_sync_and_login() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    let mut added = AddedUsers {
        setup: &s,
        uids: vec![],
    };
    for uid in [
        "Mixed.Case",
        "9lives",
        "_svc",
        "a.b-c",
        "sl/ash",
        "newbie19",
    ] {
        added.add(uid);
    }
    s.sync();
    let admitted = ["mixed.case", "9lives", "_svc", "a.b-c", "newbie19"];
    s.eventually(
        "the admitted members are hub users",
        Duration::from_secs(60),
        || admitted.iter().all(|n| s.hub_user(n).is_some()),
    );
    let (code, listed) = s.hub_api("GET", "/users?limit=200", &s.admin_token(), None);
    assert_eq!(code, 200, "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.contains('/')), "{names:?}");

    let status = s.daemon.get_json("/v1/status");
    let skipped = status["directory"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["uid"], "sl/ash");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("'/'"),
        "{skipped:?}"
    );
    assert!(
        status["degraded_reasons"].to_string().contains("sl/ash"),
        "{status:#}"
    );
    let events = s.daemon.get_json("/v1/events?limit=200");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "user.skipped" && e["details"]["uid"] == "sl/ash"),
        "{events:#}"
    );

    let jar = s.daemon.dir.path().join("jar");
    for (typed, password) in [
        ("Mixed.Case", "pw-Mixed.Case"),
        ("mixed.case", "pw-Mixed.Case"),
        ("9lives", "pw-9lives"),
        ("_svc", "pw-_svc"),
        ("a.b-c", "pw-a.b-c"),
        ("newbie19", "pw-newbie19"),
    ] {
        assert!(
            s.hub.login(typed, password, &jar).is_some(),
            "{typed} could not log in"
        );
    }
    assert!(
        s.hub.login("sl/ash", "pw-sl/ash", &jar).is_none(),
        "sl/ash logged in"
    );
    let (_, listed) = s.hub_api("GET", "/users?limit=200", &s.admin_token(), None);
    let mixed = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| {
            u["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("mixed.case"))
        })
        .count();
    assert_eq!(mixed, 1, "Mixed.Case typed both ways is one hub user");
}

/// Runs the closure when dropped (restores the directory even when an assertion fails).
struct Restore<F: FnMut()>(F);

impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Issue 19, item 2: a held drop holds only the removals by absence. Most of the users group's
/// members vanish from the directory's answer (their memberships deleted) while an admin is
/// disabled (`nsAccountLock: TRUE`) and a newcomer is added, all at once: the sync is held, yet
/// within that one sync the disabled admin's token is refused and the newcomer is a hub user,
/// while every missing member keeps access until the drop is confirmed.
#[test]
fn a_held_drop_holds_only_the_removals() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    // The generated direct members of the users group (gen-ldif.py's pattern by index i).
    let direct: Vec<String> = (1..=100u32)
        .filter(|i| i % 10 >= 2 && i % 50 != 7)
        .map(|i| format!("user{i:06}"))
        .collect();
    let missing = "user000004"; // direct, enabled, not an admin
    assert!(s.hub_user(missing).is_some(), "{missing} is a hub user");
    let token = s.user_token("alice");
    assert_eq!(s.hub_api("GET", "/user", &token, None).0, 200);
    let active_names = || -> std::collections::BTreeSet<String> {
        let users = s.daemon.get_json("/v1/users?state=active&limit=1000");
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["name"].as_str().map(String::from))
            .collect()
    };
    let before = active_names();
    let group = s.group_dn("demo_notebook_users");
    let values: String = direct
        .iter()
        .map(|u| format!("member: {}\n", s.user_dn(u)))
        .collect();
    let (alice, mallory) = (s.user_dn("alice"), s.user_dn("mallory"));
    let _restore = Restore(|| {
        for ldif in [
            format!("dn: {group}\nchangetype: modify\nadd: member\n{values}"),
            format!("dn: {alice}\nchangetype: modify\ndelete: nsAccountLock\n"),
            format!("dn: {group}\nchangetype: modify\ndelete: member\nmember: {mallory}\n"),
        ] {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                common::ldap_modify(&s.ldap, &ldif)
            }));
        }
    });
    common::ldap_modify(
        &s.ldap,
        &format!(
            "dn: {group}\nchangetype: modify\ndelete: member\n{values}-\nadd: member\nmember: {mallory}\n\n\
             dn: {alice}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n"
        ),
    );
    let report = s
        .daemon
        .request(Method::POST, "/v1/sync", &[], None)
        .json()
        .unwrap();
    assert_eq!(report["run"]["outcome"], "held", "{report}");
    assert_eq!(report["run"]["removed"], 0, "{report}");
    assert!(report["run"]["disabled"].as_u64() >= Some(1), "{report}");
    assert!(report["run"]["added"].as_u64() >= Some(1), "{report}");
    // Within that one sync (the hub sync it sets off), not at the next period.
    s.eventually(
        "the disabled admin's token is refused",
        Duration::from_secs(30),
        || s.hub_api("GET", "/user", &token, None).0 == 403,
    );
    assert!(
        s.hub_user("alice").is_none_or(|u| u["admin"] == false),
        "alice is no admin at the hub"
    );
    s.eventually(
        "the newcomer is a hub user",
        Duration::from_secs(30),
        || s.hub_user("mallory").is_some(),
    );
    // The removals wait: every missing member is still active, at pangeod and at the hub.
    let status = s.daemon.get_json("/v1/status");
    let pending = &status["directory"]["pending"];
    assert!(
        pending["would_remove"].as_u64() >= Some(direct.len() as u64 - 10),
        "{pending}"
    );
    let mut expected = before.clone();
    expected.remove("alice");
    expected.insert("mallory".to_string());
    assert_eq!(
        active_names(),
        expected,
        "only alice (disabled) and mallory (added) changed; the missing members are kept"
    );
    assert!(
        s.hub_user(missing).is_some(),
        "{missing} keeps the hub user"
    );
    let (code, out) = s.ctl(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(
            |l| l.starts_with("DEGRADED: the directory's removals are held")
                && l.contains("pangeoctl sync --confirm")
        ),
        "{out}"
    );
}

/// Issue 17, item 2, as the user documentation has it: "JupyterHub allows admin users to manage
/// the notebooks running in the system, and even to impersonate other users." JupyterHub 5's
/// admin role carries `access:servers` and `admin-ui`: an admin's token reaches a member's
/// running server, and another member's token is refused there.
#[test]
fn admins_reach_members_servers_and_members_do_not() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    s.server_running("bob");
    let admin = s.user_token("alice");
    let member = s.user_token("carol");
    let (code, body) = s.user_server("bob", "GET", "/api/status", &admin, None);
    assert_eq!(code, 200, "an admin reaches bob's server: {body}");
    let (code, body) = s.user_server("bob", "GET", "/api/contents", &admin, None);
    assert_eq!(code, 200, "and his files: {body}");
    let (code, body) = s.user_server("bob", "GET", "/api/status", &member, None);
    assert_eq!(code, 403, "another member is refused: {body}");
    let (code, out) = s.ctl(&["server", "stop", "bob"]);
    assert_eq!(code, Some(0), "{out}");
}

/// Issue 17, item 2, the switch: with `hub.admin_access = false` each server admits its owner
/// only (JupyterHub 5's admin role cannot drop `access:servers`, so the servers require an
/// own-server scope that only their owner holds): an admin's token is refused at a member's
/// server, and the member's own token still reaches it.
#[test]
fn with_admin_access_off_a_server_admits_its_owner_only() {
    let Some(s) = setup_with("\n[hub]\nadmin_access = false\n") else {
        return;
    };
    s.first_enforcement();
    s.server_running("bob");
    let admin = s.user_token("alice");
    let owner = s.user_token("bob");
    assert_eq!(
        s.hub_user("alice").unwrap()["admin"],
        true,
        "alice is an admin"
    );
    let (code, body) = s.user_server("bob", "GET", "/api/status", &admin, None);
    assert_eq!(code, 403, "an admin is refused at bob's server: {body}");
    let (code, body) = s.user_server("bob", "GET", "/api/contents", &admin, None);
    assert_eq!(code, 403, "and at his files: {body}");
    let (code, body) = s.user_server("bob", "GET", "/api/status", &owner, None);
    assert_eq!(code, 200, "bob reaches his own server: {body}");
    // The admin still administers: the hub's admin API answers the admin's token.
    let (code, body) = s.hub_api("GET", "/users/bob", &admin, None);
    assert_eq!(code, 200, "{body}");
    let (code, out) = s.ctl(&["server", "stop", "bob"]);
    assert_eq!(code, Some(0), "{out}");
}

/// Issue 17, item 1: admin flags set in the hub's own admin page last. An admin (alice, by the
/// admins group) makes bob admin and takes judy's flag (judy is admin by the admins group too),
/// with the request the Edit User dialogue sends; the next syncs notice both, record them
/// with their source, and keep them. Leaving the users group ends the grant.
#[test]
fn admin_grants_made_in_the_hub_last() {
    let Some(s) = setup() else { return };
    s.first_enforcement();
    let alice = s.user_token("alice");
    for (user, admin) in [("bob", true), ("judy", false)] {
        let (code, body) = s.hub_api(
            "PATCH",
            &format!("/users/{user}"),
            &alice,
            Some(&format!(r#"{{"admin": {admin}}}"#)),
        );
        assert_eq!(code, 200, "{user}: {body}");
    }
    let noticed = |action: &str, user: &str| {
        let events = s.daemon.get_json("/v1/events?limit=200");
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == action && e["details"]["user"] == user)
    };
    s.sync();
    s.eventually(
        "the hub sync noticed both changes",
        Duration::from_secs(30),
        || noticed("admin.hub-granted", "bob") && noticed("admin.hub-revoked", "judy"),
    );
    // More syncs (directory and hub) keep them.
    for _ in 0..2 {
        s.sync();
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        s.hub_user("bob").unwrap()["admin"],
        true,
        "bob's grant lasts"
    );
    assert_eq!(
        s.hub_user("judy").unwrap()["admin"],
        false,
        "judy's revocation lasts"
    );
    let users = s.daemon.get_json("/v1/users?limit=1000");
    let user = |name: &str| {
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(user("bob")["hub_grant"], true);
    assert_eq!(user("judy")["hub_grant"], false);
    assert_eq!(user("judy")["admin_sources"], serde_json::json!(["group"]));
    let (code, out) = s.ctl(&["users", "--state", "active"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bob ") && l.ends_with("admin (granted in the hub)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("judy ") && l.ends_with("not admin (revoked in the hub; group)")),
        "{out}"
    );

    // Leaving the users group ends the grant: back, bob is no admin.
    let mut undo = Undo {
        setup: &s,
        changes: vec![],
    };
    s.membership("demo_notebook_users", "bob", false);
    undo.changes.push(("demo_notebook_users", "bob", true));
    s.sync();
    s.eventually("bob's hub user is gone", Duration::from_secs(30), || {
        s.hub_user("bob").is_none()
    });
    assert!(noticed("admin.hub-grant-ended", "bob"));
    s.membership("demo_notebook_users", "bob", true);
    undo.changes.clear();
    s.sync();
    s.eventually("bob is a hub user again", Duration::from_secs(30), || {
        s.hub_user("bob").is_some()
    });
    assert_eq!(
        s.hub_user("bob").unwrap()["admin"],
        false,
        "the grant ended"
    );
}

/// A start the API answered with 202 (the spawn outlived the request's wait) finishes in the
/// hub later: `pangeoctl servers` then shows the server running, not the "starting" of the
/// listing the 202 left behind (it asks the hub again for the page's servers listed as starting
/// or stopping). Bob's spawns take 8 s here, more than the API's 6 s wait.
#[test]
fn a_start_that_finishes_after_its_202_shows_running() {
    let slow = "\nimport asyncio\n\nasync def _slow_for_bob(spawner):\n    if spawner.user.name == 'bob':\n        await asyncio.sleep(8)\n\nc.Spawner.pre_spawn_hook = _slow_for_bob\nc.Spawner.start_timeout = 60\n";
    let Some(s) = setup_with_hub("", slow) else {
        return;
    };
    s.first_enforcement();
    let (code, out) = s.ctl(&["--json", "server", "start", "bob"]);
    assert_eq!(code, Some(0), "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["outcome"], "pending",
        "the spawn outlives the wait: {out}"
    );
    assert_eq!(answer["server"], "starting", "{out}");
    s.eventually(
        "bob's server runs in the hub",
        Duration::from_secs(60),
        || {
            s.hub_user("bob")
                .is_some_and(|u| u["server"].is_string() && u["pending"].is_null())
        },
    );
    let (code, out) = s.ctl(&["servers"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bob ") && l.contains("running")),
        "{out}"
    );
    let (code, out) = s.ctl(&["server", "stop", "bob"]);
    assert_eq!(code, Some(0), "{out}");
}
