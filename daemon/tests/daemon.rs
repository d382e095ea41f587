//! The daemon as a process: bad config, signals, locks, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::time::{Duration, Instant};

use common::{TestDaemon, step};
use nix::sys::signal::Signal;
use pangeod::state::State;

#[test]
fn bad_config_keeps_the_daemon_up_in_a_failed_state_naming_the_field() {
    let mut daemon = TestDaemon::new("\n[notebook]\ncpus = 0\n");
    daemon.start();
    let status = daemon.wait_status("a failed config step", |s| s["phase"] == "failed");
    let config = step(&status, "config");
    assert_eq!(config["state"], "failed");
    assert_eq!(config["key"], "notebook.cpus");
    let path = daemon.config_path().display().to_string();
    assert_eq!(
        config["message"],
        format!(
            "{path}:27:1: notebook.cpus: 0 is out of range: it must be an integer from 1 to 256; set notebook.cpus to a value from 1 to 256"
        )
    );
    assert_eq!(step(&status, "preflight")["state"], "pending");
    assert!(
        status["summary"]
            .as_str()
            .unwrap()
            .starts_with("failed at config: ")
    );

    let ready = daemon.request(hyper::Method::GET, "/v1/ready", &[], None);
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.content_type.as_deref(),
        Some("application/problem+json")
    );

    // Still up a while later: no crash loop.
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.child.as_mut().unwrap().try_wait().unwrap().is_none());
    daemon.stop();
}

#[test]
fn fixing_the_config_and_sending_sighup_recovers() {
    let mut daemon = TestDaemon::new("");
    let broken = daemon.write_dropin("50-portal.toml", "[notebook]\nram_gb = \"lots\"\n");
    daemon.start();
    let status = daemon.wait_status("a failed config step", |s| s["phase"] == "failed");
    assert_eq!(
        step(&status, "config")["message"],
        format!(
            "{}:2:1: notebook.ram_gb: invalid type: string \"lots\", expected i64; write it as an integer",
            broken.display()
        )
    );
    daemon.write_dropin("50-portal.toml", "[notebook]\nram_gb = 4\n");
    daemon.signal(Signal::SIGHUP);
    let status = daemon.wait_status("booted", common::booted);
    assert_eq!(step(&status, "config")["state"], "done");
    daemon.stop();
}

#[test]
fn sighup_applies_a_valid_change_and_refuses_an_invalid_one() {
    let mut daemon = TestDaemon::new("");
    daemon.start();
    let first = daemon.wait_status("booted", common::booted);
    let first_revision = first["config_revision"].as_i64().unwrap();

    daemon.write_dropin("50-portal.toml", "[notebook]\ncpus = 4\n");
    daemon.signal(Signal::SIGHUP);
    let second = daemon.wait_status("a new revision", |s| {
        s["config_revision"].as_i64() > Some(first_revision)
    });
    let second_revision = second["config_revision"].as_i64().unwrap();

    daemon.write_dropin("60-typo.toml", "[notebook]\ncpu = 8\n");
    daemon.signal(Signal::SIGHUP);
    let refused = daemon.wait_status("a refused reload", |s| !s["reload_error"].is_null());
    assert!(
        refused["reload_error"]
            .as_str()
            .unwrap()
            .contains("notebook.cpu: unknown key")
    );
    assert_eq!(
        step(&refused, "config")["state"],
        "done",
        "the config in force stays"
    );
    assert_eq!(refused["config_revision"].as_i64(), Some(second_revision));
    daemon.stop();

    let state = State::open(&daemon.state_dir()).unwrap();
    let latest = state.latest_config_revision().unwrap().unwrap();
    assert_eq!(latest.id, second_revision);
    assert_eq!(latest.effective["notebook"]["cpus"], 4);
    let actions: Vec<String> = state
        .events(None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"config.reload_refused".to_string()),
        "{actions:?}"
    );
}

#[test]
fn immutable_keys_are_locked_after_the_first_successful_boot() {
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    daemon.stop();

    // A drop-in from the portal tries to move the cluster to another IP.
    let dropin = daemon.write_dropin(
        "50-portal.toml",
        "[cluster]\nexternal_ip = \"192.0.2.99\"\n",
    );
    daemon.start();
    let status = daemon.wait_status("a failed config step", |s| s["phase"] == "failed");
    let config = step(&status, "config");
    assert_eq!(config["key"], "cluster.external_ip");
    let message = config["message"].as_str().unwrap();
    let prefix = format!(
        "{}:2:1: cluster.external_ip: cannot change from \"192.0.2.10\" to \"192.0.2.99\": it was locked at the first successful boot (",
        dropin.display()
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.ends_with("), and the appliance keeps \"192.0.2.10\"; restore cluster.external_ip = \"192.0.2.10\", or launch a new appliance for a different value"), "{message}");
    daemon.stop();

    let state = State::open(&daemon.state_dir()).unwrap();
    assert_eq!(
        state.locked_keys().unwrap()["cluster.external_ip"].value,
        "192.0.2.10"
    );
    let latest = state.latest_config_revision().unwrap().unwrap();
    assert_eq!(
        latest.effective["cluster"]["external_ip"], "192.0.2.10",
        "the old value is kept"
    );
}

#[test]
fn a_key_made_immutable_by_a_newer_version_is_locked_at_the_next_boot() {
    // State from an older pangeod, which locked only some keys at its first boot.
    let mut daemon = TestDaemon::new("");
    {
        let state = State::open(&daemon.state_dir()).unwrap();
        state
            .lock_keys(&[("cluster.external_ip".into(), "192.0.2.10".into())])
            .unwrap();
    }
    let before = State::open(&daemon.state_dir())
        .unwrap()
        .locked_keys()
        .unwrap();
    daemon.start();
    daemon.wait_status("booted", common::booted);
    daemon.stop();

    let locked = State::open(&daemon.state_dir())
        .unwrap()
        .locked_keys()
        .unwrap();
    assert_eq!(locked["storage.volume_group"].value, "pangeo");
    assert_eq!(
        locked["cluster.external_ip"], before["cluster.external_ip"],
        "an existing lock is kept as it was"
    );
    let mut every_key: Vec<&str> = pangeod::config::settings::locked_keys().collect();
    every_key.sort_unstable();
    assert_eq!(
        locked.keys().map(String::as_str).collect::<Vec<_>>(),
        every_key
    );
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let mut first = TestDaemon::new("");
    first.start();
    let mut second = first.command().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the second daemon kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(78));
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "pangeod: another pangeod (pid {}) is already using the state in {}; stop it first",
            first.pid(),
            first.state_dir().display()
        )),
        "{stderr}"
    );
    // The first one is unharmed.
    assert_eq!(first.get_json("/v1/health")["status"], "ok");
    first.stop();
}

#[test]
fn a_state_database_from_a_newer_version_is_refused() {
    let mut daemon = TestDaemon::new("");
    std::fs::create_dir_all(daemon.state_dir()).unwrap();
    let db = daemon.state_dir().join("state.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 42)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    daemon.child = Some(daemon.command().spawn().unwrap());
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(78));
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "has schema version 42, newer than the {} this pangeod understands",
            pangeod::state::SCHEMA_VERSION
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the newer database is not touched"
    );
    daemon.child = None;
}

#[test]
fn sigterm_stops_gracefully_and_removes_the_socket() {
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!daemon.socket().exists());
    daemon.child = None;
    let state = State::open(&daemon.state_dir()).unwrap();
    assert_eq!(state.events(None, 1).unwrap()[0].action, "daemon.stopped");
}

#[test]
fn a_missing_data_disk_fails_preflight_naming_the_key() {
    let mut daemon = TestDaemon::new("");
    daemon.write_main(
        &TestDaemon::main_text().replace("require_data_disk = false", "require_data_disk = true"),
    );
    daemon.start();
    let status = daemon.wait_status("a failed preflight", |s| s["phase"] == "failed");
    let preflight = step(&status, "preflight");
    assert_eq!(preflight["key"], "daemon.data_dir");
    assert!(
        preflight["message"]
            .as_str()
            .unwrap()
            .contains("is not a mounted filesystem: the data disk is missing"),
        "{preflight}"
    );
    assert_eq!(step(&status, "config")["state"], "done");
    daemon.stop();
}

#[test]
fn step_states_survive_a_restart() {
    let mut daemon = TestDaemon::new("");
    daemon.start();
    daemon.wait_status("booted", common::booted);
    daemon.stop();
    daemon.start();
    let status = daemon.wait_status("booted", common::booted);
    assert_eq!(
        step(&status, "config")["attempts"],
        2,
        "attempts count across restarts"
    );
    daemon.stop();
}

#[test]
fn the_unit_file_matches_the_daemon() {
    let unit = read_unit("pangeod.service");
    let value = |key: &str| unit_values(&unit, key);
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("NotifyAccess"), ["main"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(
        value("RestartPreventExitStatus"),
        [pangeod::daemon::EXIT_CANNOT_START.to_string()]
    );
    assert_eq!(
        value("ExecStart"),
        [format!(
            "/usr/bin/pangeod --config {}",
            pangeod::config::DEFAULT_CONFIG_PATH
        )]
    );
    assert_eq!(value("ProtectSystem"), ["strict"]);
    assert_eq!(value("PrivateTmp"), ["yes"]);
    assert!(!value("WatchdogSec").is_empty());
    // The portal's drop-ins arrive through cloud-init's write_files, in its network stage; the
    // later stages (cloud-config, cloud-final) are not waited for.
    let after = value("After").join(" ");
    assert!(
        after.split(' ').any(|u| u == "cloud-init-network.service")
            && !after.contains("cloud-config.service"),
        "{after}"
    );
    // The state lives on the data disk, which must stay writable under ProtectSystem=strict.
    assert!(
        value("ReadWritePaths")[0]
            .split(' ')
            .any(|p| p == "/var/lib/pangeo")
    );
}

#[test]
fn the_socket_is_0660_and_owned_by_the_configured_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // `adm` exists on every Debian system.
    let Some(group) = nix::unistd::Group::from_name("adm").unwrap() else {
        eprintln!("SKIPPED: no adm group on this machine");
        return;
    };
    let mut daemon = TestDaemon::new("");
    daemon.write_main(&TestDaemon::main_text().replace(
        "socket = \"run/admin.sock\"",
        "socket = \"run/admin.sock\"\nsocket_group = \"adm\"",
    ));
    daemon.start();
    let meta = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid.as_raw());
    daemon.stop();

    daemon.write_main(&TestDaemon::main_text().replace(
        "socket = \"run/admin.sock\"",
        "socket = \"run/admin.sock\"\nsocket_group = \"no-such-group-x\"",
    ));
    daemon.child = Some(daemon.command().spawn().unwrap());
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(78));
    assert!(
        daemon
            .stderr()
            .contains("api.socket_group: no group named \"no-such-group-x\" exists")
    );
    daemon.child = None;
}

#[test]
fn the_k3s_unit_is_its_own_delegated_notify_unit() {
    let unit = read_unit("k3s.service");
    let value = |key: &str| unit_values(&unit, key);
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("Delegate"), ["yes"]);
    assert_eq!(value("KillMode"), ["process"]);
    assert_eq!(
        value("ExecStart"),
        [format!(
            "/usr/local/bin/k3s server --config {}",
            pangeod::k3s::CONFIG_PATH
        )]
    );
    // pangeod starts it; it is not enabled by itself.
    assert!(!unit.contains("[Install]"));
}

fn read_unit(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../systemd")
            .join(name),
    )
    .unwrap()
}

/// The values of `key=` lines in a unit file.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_directory_outage_does_not_hold_back_the_kubernetes_steps() {
    // No FreeIPA answers for this config: the first sync fails, and the steps after it run.
    let mut daemon = TestDaemon::new("");
    daemon.start();
    let status = daemon.wait_status("the k3s steps settled after the failed sync", |s| {
        s["phase"] == "failed" && step(s, "kubernetes-api")["state"] == "skipped"
    });
    assert_eq!(step(&status, "directory-sync")["state"], "failed");
    assert_eq!(step(&status, "k3s")["state"], "skipped");
    assert!(
        step(&status, "k3s")["message"]
            .as_str()
            .unwrap()
            .starts_with("k3s.mode = \"off\": this machine runs no Kubernetes")
    );
    assert!(
        status["summary"]
            .as_str()
            .unwrap()
            .starts_with("failed at directory-sync: "),
        "{status}"
    );
    daemon.stop();
}

#[test]
fn an_image_without_k3s_fails_the_k3s_step_saying_how_to_bundle_it() {
    let mut daemon = TestDaemon::new("");
    let missing = daemon.dir.path().join("no-k3s-here");
    // The storage step runs in child mode too: pointed at a device that does not exist, it
    // fails (without holding back the k3s step) instead of making a volume group on this host.
    let no_disk = daemon.dir.path().join("no-disk");
    daemon.write_main(&format!(
        "{}\n[storage]\ndevice = \"{}\"\n",
        TestDaemon::main_text().replace(
            "mode = \"off\"",
            &format!("mode = \"child\"\nbinary = \"{}\"", missing.display()),
        ),
        no_disk.display()
    ));
    daemon.start();
    let status = daemon.wait_status("a failed k3s step", |s| step(s, "k3s")["state"] == "failed");
    assert_eq!(step(&status, "storage")["state"], "failed");
    let k3s = step(&status, "k3s");
    assert_eq!(k3s["key"], "k3s.binary");
    assert_eq!(
        k3s["message"],
        format!(
            "k3s is not bundled in this image: {} is missing. Build the image with `images/build --artifacts DIR`, where DIR was filled by `images/fetch-artifacts DIR` on a machine with internet",
            missing.display()
        )
    );
    assert_eq!(status["k3s"]["mode"], "child");
    assert_eq!(status["k3s"]["bundle"], k3s["message"]);
    assert_eq!(step(&status, "kubernetes-api")["state"], "pending");
    assert_eq!(status["phase"], "failed");
    daemon.stop();
}
