//! `LDAP_WORKDIR=... cargo bench --bench hub_sync`: the hub sync against a real JupyterHub
//! (integration-tests/fixtures/hub, started here) and, for the removal, the real 389-ds fixture.
//!
//! 1. Bulk enforcement: 1,000 new members into an empty hub, with the number of HTTP requests.
//!    Baselines, same hub, same run: the hub's own bulk `POST /users` with the same names
//!    (target: pangeod at most 1.2 times it, issue 17), and one `POST /users/{name}` at a time,
//!    as a naive script would.
//! 2. Removal: from the `ldapmodify` that takes a user out of the FreeIPA group to their tokens
//!    being revoked and their server's stop requested, through content sync (target < 2 s).
//!    Baseline: the same removal when the sync is started directly at the moment of the change
//!    (`POST /v1/sync`), which is the pipeline without the notification.
//!
//! Prints a Markdown table for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pangeod::config::{Config, Layer};
use pangeod::directory::DirectorySync;
use pangeod::hub::{HubClient, HubSync};
use pangeod::state::{Member, State, SyncRun};

const BULK: usize = 1000;
const REMOVALS: usize = 5;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration-tests/fixtures/hub")
}

fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

struct Hub {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Hub {
    fn start(dir: &Path, config: &Path) -> Option<Self> {
        let status = Command::new(fixture_dir().join("start.sh"))
            .arg(dir)
            .arg(config)
            .status()
            .unwrap();
        if !status.success() {
            eprintln!("SKIPPED: the hub fixture did not start ({status})");
            return None;
        }
        Some(Self {
            dir: dir.to_path_buf(),
            env: read_env(&dir.join("env")),
        })
    }

    fn client(&self) -> HubClient {
        HubClient::new(
            &self.env["HUB_API_URL"],
            self.env["HUB_ADMIN_TOKEN"].clone(),
            None,
        )
        .unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new(fixture_dir().join("stop.sh"))
            .arg(&self.dir)
            .status();
    }
}

fn member(name: &str, admin: bool) -> Member {
    Member {
        name: name.to_string(),
        uid: name.to_string(),
        cn: name.to_string(),
        mail: format!("{name}@example.test"),
        disabled: false,
        admin_sources: if admin { vec!["group".into()] } else { vec![] },
    }
}

fn run_record() -> SyncRun {
    SyncRun::applied_now("bench")
}

/// The hub config pangeod renders (the LDAP authenticator; creating users asks nothing of the
/// directory, so a placeholder server does).
fn rendered_hub_config(work: &Path) -> PathBuf {
    std::fs::write(work.join("password"), "unused\n").unwrap();
    std::fs::write(
        work.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\n\
                server = \"127.0.0.1:1636\"\nbase_dn = \"dc=example,dc=test\"\n\
                bind_dn = \"uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test\"\n\
                password_file = \"password\"\nca_file = \"ca.pem\"\n";
    let layer = Layer::from_str("bench.toml", Some(work.to_path_buf()), text).unwrap();
    let config = Config::from_layers(&[layer], &Default::default()).unwrap();
    let path = work.join("jupyterhub_config.py");
    std::fs::write(&path, pangeod::components::values::hub_config_py(&config)).unwrap();
    path
}

fn bulk(rt: &tokio::runtime::Runtime, work: &Path) -> Vec<String> {
    let config = rendered_hub_config(work);
    let Some(hub) = Hub::start(&work.join("hub-bulk"), &config) else {
        return vec![];
    };
    let client = hub.client();
    let state = std::sync::Arc::new(State::open(&work.join("bulk-state")).unwrap());
    let members: Vec<Member> = (0..BULK)
        .map(|i| member(&format!("bulk{i:04}"), i % 100 == 0))
        .collect();
    state.apply_members(&members, &run_record()).unwrap();

    // One timed hub sync run of every member.
    let ours = || {
        let started = Instant::now();
        let report = rt
            .block_on(pangeod::hub::enforce::run(
                &client,
                &state,
                &pangeod::hub::enforce::all_users(&state).unwrap(),
            ))
            .unwrap();
        (started.elapsed(), report)
    };
    let (bulk_time, report) = ours();
    let in_hub = rt.block_on(client.users()).unwrap();
    eprintln!(
        "bulk enforcement: {report:?} in {bulk_time:?}; the hub lists {} users",
        in_hub.len()
    );
    assert_eq!(
        in_hub.iter().filter(|u| u.name.starts_with("bulk")).count(),
        BULK,
        "every member is a hub user"
    );
    assert_eq!(report.created, BULK);
    assert_eq!(report.failed, 0);

    let (noop_time, again) = ours();

    // Baselines on the same hub: empty it (untimed), then create the same users with the hub's
    // own API, one `POST /users/{name}` at a time (a naive script), and with its bulk
    // `POST /users` (the 990 members in one request, the 10 admins in another). The hub's bulk
    // and pangeod's run alternate, twice each, so that neither gets the emptier database.
    let http = reqwest::Client::new();
    let api = hub.env["HUB_API_URL"].clone();
    let token = hub.env["HUB_ADMIN_TOKEN"].clone();
    let empty = || {
        rt.block_on(async {
            for member in &members {
                client.delete_user(&member.name).await.unwrap();
            }
        });
    };
    empty();
    let started = Instant::now();
    rt.block_on(async {
        for member in &members {
            let response = http
                .post(format!("{api}/users/{}", member.name))
                .header("Authorization", format!("token {token}"))
                .json(&serde_json::json!({ "admin": !member.admin_sources.is_empty() }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
    });
    let naive_time = started.elapsed();
    let hub_bulk = || {
        let started = Instant::now();
        rt.block_on(async {
            for admin in [false, true] {
                let names: Vec<&str> = members
                    .iter()
                    .filter(|m| m.admin_sources.is_empty() != admin)
                    .map(|m| m.name.as_str())
                    .collect();
                let response = http
                    .post(format!("{api}/users"))
                    .header("Authorization", format!("token {token}"))
                    .json(&serde_json::json!({ "usernames": names, "admin": admin }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        });
        started.elapsed()
    };
    let ours_again = || {
        let (time, report) = ours();
        assert_eq!(report.created, BULK);
        time
    };
    let mut theirs = Vec::new();
    let mut ours = vec![bulk_time];
    empty();
    theirs.push(hub_bulk());
    empty();
    ours.push(ours_again());
    empty();
    theirs.push(hub_bulk());
    let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len() as u32;
    let (ours_mean, theirs_mean) = (mean(&ours), mean(&theirs));
    let ratio = ours_mean.as_secs_f64() / theirs_mean.as_secs_f64();
    eprintln!("bulk: pangeod {ours:?}, the hub's own bulk POST {theirs:?}, ratio {ratio:.2}");
    vec![
        format!(
            "| baseline: {BULK} users created one `POST /users/{{name}}` at a time | {:.2} s, {BULK} requests | |",
            naive_time.as_secs_f64()
        ),
        format!(
            "| baseline: the same {BULK} names with the hub's own bulk `POST /users` (members, then admins), mean of 2 | {:.2} s ({:.2}, {:.2}), 2 requests | |",
            theirs_mean.as_secs_f64(),
            theirs[0].as_secs_f64(),
            theirs[1].as_secs_f64()
        ),
        format!(
            "| hub sync: {BULK} new members into an empty hub, mean of 2 | **{:.2} s** ({:.2}, {:.2}), {} requests (the listing included), ratio to the hub's bulk **{:.2}** | ≤ 1.2: **{}** |",
            ours_mean.as_secs_f64(),
            ours[0].as_secs_f64(),
            ours[1].as_secs_f64(),
            report.requests,
            ratio,
            if ratio <= 1.2 { "met" } else { "missed" }
        ),
        format!(
            "| hub sync with nothing to change ({BULK} members) | {:.0} ms, {} requests | |",
            noop_time.as_secs_f64() * 1000.0,
            again.requests
        ),
    ]
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn removal(rt: &tokio::runtime::Runtime, work: &Path, ldap_dir: &str) -> Vec<String> {
    let ldap = read_env(&Path::new(ldap_dir).join("env"));
    let config = rendered_hub_config(work);
    let Some(hub) = Hub::start(&work.join("hub-removal"), &config) else {
        return vec![];
    };
    let token_file = work.join("hub-token");
    std::fs::write(&token_file, &hub.env["HUB_ADMIN_TOKEN"]).unwrap();
    let text = format!(
        "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"127.0.0.1:{}\"\n\
         tls = \"ldaps\"\nbase_dn = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n\
         [hub]\napi_url = \"{}\"\napi_token_file = \"{}\"\n",
        ldap["LDAPS_PORT"],
        ldap["LDAP_BASE_DN"],
        ldap["LDAP_BIND_DN"],
        ldap["LDAP_BIND_PASSWORD_FILE"],
        ldap["LDAP_CA"],
        hub.env["HUB_API_URL"],
        token_file.display()
    );
    let layer = Layer::from_str("bench.toml", Some(work.to_path_buf()), &text).unwrap();
    let config = Arc::new(Config::from_layers(&[layer], &Default::default()).unwrap());
    let state = Arc::new(State::open(&work.join("removal-state")).unwrap());
    let sync = DirectorySync::new(state.clone());
    let hub_sync = HubSync::new(state.clone(), pangeod::k3s::K3sRuntime::default());
    let client = hub.client();
    let group = format!("cn=demo_notebook_users,{}", ldap["LDAP_GROUPS_DN"]);
    let bob = format!("uid=bob,{}", ldap["LDAP_USERS_DN"]);
    let remove = format!("dn: {group}\nchangetype: modify\ndelete: member\nmember: {bob}\n");
    let add = format!("dn: {group}\nchangetype: modify\nadd: member\nmember: {bob}\n");

    rt.block_on(sync.run(&config, "bench", true)).unwrap();
    rt.block_on(hub_sync.enforce(&config)).unwrap();
    let (_config_tx, config_rx) = tokio::sync::watch::channel(Some(config.clone()));
    let heartbeats = pangeod::systemd::Heartbeats::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let directory_loop = rt.spawn(pangeod::directory::run_loop(
        sync.clone(),
        config_rx.clone(),
        heartbeats.clone(),
        cancel.clone(),
    ));
    let hub_loop = rt.spawn(hub_sync.clone().run_loop(
        config_rx,
        sync.status(),
        heartbeats,
        cancel.clone(),
    ));
    // Let the content-sync search finish its refresh phase.
    std::thread::sleep(Duration::from_secs(3));

    // The moment the hub no longer holds bob's tokens (or bob).
    let revoked = |client: &HubClient| {
        rt.block_on(async {
            match client.tokens("bob").await {
                Ok(tokens) => tokens.is_empty(),
                Err(_) => true,
            }
        })
    };
    let prepare = |client: &HubClient| {
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.user("bob").await.unwrap().is_none() {
                assert!(Instant::now() < deadline, "bob never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A token to revoke.
            reqwest::Client::new()
                .post(format!("{}/users/bob/tokens", hub.env["HUB_API_URL"]))
                .header(
                    "Authorization",
                    format!("token {}", hub.env["HUB_ADMIN_TOKEN"]),
                )
                .json(&serde_json::json!({ "note": "bench" }))
                .send()
                .await
                .unwrap();
        })
    };
    let mut notified = Vec::new();
    let mut direct = Vec::new();
    for round in 0..REMOVALS * 2 {
        prepare(&client);
        let through_content_sync = round % 2 == 0;
        let started = Instant::now();
        common::ldap_modify(&ldap, &remove);
        if !through_content_sync {
            rt.block_on(sync.run(&config, "bench", false)).unwrap();
        }
        while !revoked(&client) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "bob's tokens were never revoked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        if through_content_sync {
            notified.push(took);
        } else {
            direct.push(took);
        }
        // Wait until bob is fully gone before putting him back.
        rt.block_on(async {
            while client.user("bob").await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        common::ldap_modify(&ldap, &add);
        rt.block_on(sync.run(&config, "bench", true)).unwrap();
        hub_sync.kick();
    }
    directory_loop.abort();
    hub_loop.abort();
    let notified_median = median(notified.clone());
    let direct_median = median(direct.clone());
    eprintln!("removal through content sync: {notified:?}; direct sync: {direct:?}");
    vec![
        format!(
            "| baseline: removal, sync started directly at the change, median of {REMOVALS} | {:.0} ms | |",
            direct_median.as_secs_f64() * 1000.0
        ),
        format!(
            "| removal to tokens revoked through content sync (the server's stop is requested next), median of {REMOVALS} | **{:.0} ms**, ratio {:.2} (max {:.0} ms) | < 2 s: **{}** |",
            notified_median.as_secs_f64() * 1000.0,
            notified_median.as_secs_f64() / direct_median.as_secs_f64(),
            notified.iter().max().unwrap().as_secs_f64() * 1000.0,
            if notified_median < Duration::from_secs(2) {
                "met"
            } else {
                "missed"
            }
        ),
    ]
}

/// Removal at scale (issue 19, item 6): `n` hub users whose members the directory removed, as
/// pangeod's hub sync removes them, against the hub's own `DELETE /users/{name}` for the same
/// users at the same concurrency (8), in the same run; with request counts.
fn mass_removal(rt: &tokio::runtime::Runtime, work: &Path, n: usize) -> Vec<String> {
    let config = rendered_hub_config(work);
    let Some(hub) = Hub::start(&work.join(format!("hub-mass-{n}")), &config) else {
        return vec![];
    };
    let client = hub.client();
    let state = Arc::new(State::open(&work.join(format!("mass-state-{n}"))).unwrap());
    let members: Vec<Member> = (0..n)
        .map(|i| member(&format!("gone{i:05}"), false))
        .collect();
    let enforce = |state: &Arc<State>| {
        rt.block_on(pangeod::hub::enforce::run(
            &client,
            state,
            &pangeod::hub::enforce::all_users(state).unwrap(),
        ))
        .unwrap()
    };
    state.apply_members(&members, &run_record()).unwrap();
    let created = enforce(&state);
    assert_eq!(created.created, n, "{created:?}");
    // Every member removed by the directory: the hub sync deletes them.
    state.apply_members(&[], &run_record()).unwrap();
    let started = Instant::now();
    let removed = enforce(&state);
    let ours = started.elapsed();
    assert_eq!(removed.purged, n, "{removed:?}");
    assert_eq!(removed.failed, 0, "{removed:?}");
    let left = rt.block_on(client.users()).unwrap();
    assert!(
        left.iter().all(|u| !u.name.starts_with("gone")),
        "all deleted"
    );

    // Baseline: the same users again (untimed), deleted with the hub's own DELETE.
    state.apply_members(&members, &run_record()).unwrap();
    assert_eq!(enforce(&state).created, n);
    let http = reqwest::Client::new();
    let api = hub.env["HUB_API_URL"].clone();
    let token = hub.env["HUB_ADMIN_TOKEN"].clone();
    let started = Instant::now();
    rt.block_on(async {
        use futures_util::StreamExt;
        futures_util::stream::iter(&members)
            .map(|member| {
                http.delete(format!("{api}/users/{}", member.name))
                    .header("Authorization", format!("token {token}"))
                    .send()
            })
            .buffer_unordered(8)
            .for_each(|response| async move {
                assert_eq!(response.unwrap().status(), 204);
            })
            .await;
    });
    let baseline = started.elapsed();
    let ratio = ours.as_secs_f64() / baseline.as_secs_f64();
    eprintln!("mass removal of {n}: pangeod {ours:?} ({removed:?}); hub DELETE {baseline:?}");
    vec![
        format!(
            "| baseline: {n} hub users deleted with the hub's own `DELETE /users/{{name}}`, 8 at a time | {:.2} s, {n} requests | |",
            baseline.as_secs_f64()
        ),
        format!(
            "| hub sync: the same {n} users removed by the directory | **{:.2} s**, {} requests (listing included), ratio **{ratio:.2}** | ≤ 1.2: **{}** |",
            ours.as_secs_f64(),
            removed.requests,
            if ratio <= 1.2 { "met" } else { "missed" }
        ),
    ]
}

/// `GET /v1/users` pages at scale (issue 19, item 6): the real pangeod with `n` active members
/// who are all hub users, a page of 100 at a random place, 500 times; p50/p99. Baseline, same
/// hub, same run: one listing of the hub's users, which is what every page cost before pages
/// were served from the last listing.
fn users_page(rt: &tokio::runtime::Runtime, work: &Path, n: usize) -> Vec<String> {
    let config = rendered_hub_config(work);
    let Some(hub) = Hub::start(&work.join(format!("hub-page-{n}")), &config) else {
        return vec![];
    };
    let client = hub.client();
    let dir = work.join(format!("page-{n}"));
    let state_dir = dir.join("state");
    let names: Vec<String> = (0..n).map(|i| format!("page{i:05}")).collect();
    {
        let state = Arc::new(State::open(&state_dir).unwrap());
        let members: Vec<Member> = names.iter().map(|name| member(name, false)).collect();
        state.apply_members(&members, &run_record()).unwrap();
        let created = rt
            .block_on(pangeod::hub::enforce::run(
                &client,
                &state,
                &pangeod::hub::enforce::all_users(&state).unwrap(),
            ))
            .unwrap();
        assert_eq!(created.created, n, "{created:?}");
    }
    let token_file = dir.join("hub-token");
    std::fs::write(&token_file, &hub.env["HUB_ADMIN_TOKEN"]).unwrap();
    std::fs::write(dir.join("password"), "unused\n").unwrap();
    std::fs::copy(work.join("ca.pem"), dir.join("ca.pem")).unwrap();
    let config = dir.join("pangeod.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"127.0.0.1:1636\"\n\
             base_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test\"\n\
             password_file = \"password\"\nca_file = \"ca.pem\"\n[hub]\napi_url = \"{}\"\napi_token_file = \"{}\"\n\
             [api]\nsocket = \"run/admin.sock\"\n[daemon]\nstate_dir = \"state\"\ndata_dir = \".\"\n\
             require_data_disk = false\nmin_free_gb = 0\n[k3s]\nmode = \"off\"\n",
            hub.env["HUB_API_URL"],
            token_file.display()
        ),
    )
    .unwrap();
    let socket = dir.join("run/admin.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pangeod"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| {
        rt.block_on(pangeod::client::request(
            &socket,
            hyper::Method::GET,
            path,
            &[],
            None,
            Duration::from_secs(30),
        ))
    };
    // Until the daemon's hub sync has run once (it lists the hub, and finds nothing to change).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let synced = get("/v1/status")
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|s| !s["hub"]["last_success_at"].is_null());
        if synced {
            break;
        }
        assert!(Instant::now() < deadline, "pangeod's hub sync never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut samples = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = &names[(seed % n as u64) as usize];
        let started = Instant::now();
        let page = get(&format!("/v1/users?limit=100&after={after}")).unwrap();
        samples.push(started.elapsed());
        assert_eq!(page.status, 200);
        let page = page.json().unwrap();
        assert!(page["hub_error"].is_null(), "{}", page["hub_error"]);
        let users = page["users"].as_array().unwrap();
        assert!(
            users.iter().all(|u| u["hub"]["server"] == "stopped"),
            "every listed member shows the hub's view"
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let listings: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let listed = rt.block_on(client.users()).unwrap();
            assert!(listed.len() >= n);
            started.elapsed()
        })
        .collect();
    let listing = median(listings);
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    vec![
        format!(
            "| baseline: one listing of the hub's {n} users (what each `GET /v1/users` page cost before), median of 5 | {:.0} ms | |",
            ms(listing)
        ),
        format!(
            "| `GET /v1/users?limit=100` at {n} members, 500 pages at random places: p50 / p99 | {:.2} / **{:.2} ms**, 0 hub requests per page, ratio p99/baseline **{:.4}** | p99 < 50 ms: **{}** |",
            ms(p50),
            ms(p99),
            ms(p99) / ms(listing),
            if p99 < Duration::from_millis(50) {
                "met"
            } else {
                "missed"
            }
        ),
    ]
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("pangeo-hub-bench.")
        .tempdir()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = bulk(&rt, work.path());
    // PANGEO_BENCH_REMOVALS: the sizes of the removal at scale, comma-separated (default 1000).
    let sizes = std::env::var("PANGEO_BENCH_REMOVALS").unwrap_or_else(|_| "1000".into());
    for n in sizes
        .split(',')
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        rows.extend(mass_removal(&rt, work.path(), n));
    }
    // PANGEO_BENCH_PAGES: the member count of the users-page measurement (default 20000).
    let pages = std::env::var("PANGEO_BENCH_PAGES").unwrap_or_else(|_| "20000".into());
    if let Ok(n) = pages.trim().parse::<usize>()
        && n > 0
    {
        rows.extend(users_page(&rt, work.path(), n));
    }
    match std::env::var("LDAP_WORKDIR") {
        Ok(dir) => rows.extend(removal(&rt, work.path(), &dir)),
        Err(_) => {
            eprintln!("SKIPPED the removal benchmark: set LDAP_WORKDIR to a running 389-ds fixture")
        }
    }
    println!("| measurement | value | target |\n|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
