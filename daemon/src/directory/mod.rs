//! Directory sync with FreeIPA: who may log in, and who is a hub admin.
//!
//! Fail-safe by construction: the user table changes only after a complete, error-free read,
//! and the removals of a result that would drop more than half the active users are held until
//! an admin confirms them (the rest of that result, disables included, applies at once). A
//! directory error never revokes anyone.

mod ldap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::driver::{Driver, Job, Outcome, Why};
use crate::state::{Member, State, StateCall, StateError, SyncChanges, SyncRun, now};

pub use ldap::{DirectoryClient, DirectoryUser, Snapshot, Tree, host_port, normalize_dn};

/// Every this many runs a full read happens even when the change check says nothing changed.
const FULL_SYNC_EVERY: u32 = 12;
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "cannot connect to {server}: {reason}; check freeipa.server and that FreeIPA is up and reachable"
    )]
    Connect { server: String, reason: String },
    #[error(
        "TLS with {server} failed: {reason}; check freeipa.ca_file holds the CA that signed FreeIPA's certificate, and that the certificate is valid"
    )]
    Tls { server: String, reason: String },
    #[error("{server} did not answer in time; check the network and FreeIPA's load")]
    Timeout { server: String },
    #[error("the sync account {dn} cannot bind (LDAP result {rc}{}); check freeipa.bind_dn and the password in freeipa.password_file", if .text.is_empty() { String::new() } else { format!(": {}", .text) })]
    Bind { dn: String, rc: u32, text: String },
    #[error(
        "{dn} does not exist, or the sync account may not read it; check {key} (and the ACIs in docs/FREEIPA.md)"
    )]
    Missing { dn: String, key: String },
    #[error(
        "a directory limit stopped the member search after {read} entries (LDAP result {rc}, {}{}); grant the sync account nsSizeLimit, nsPagedSizeLimit, nsLookThroughLimit, nsPagedLookThroughLimit and nsIDListScanLimit of -1, see docs/FREEIPA.md",
        if *.rc == 11 { "adminLimitExceeded: a look-through or ID-list scan limit" } else { "sizeLimitExceeded: a size limit" },
        if .text.is_empty() { String::new() } else { format!(": {}", .text) }
    )]
    SizeLimit { read: usize, rc: u32, text: String },
    #[error("{what} failed with LDAP result {rc}{}", if .text.is_empty() { String::new() } else { format!(": {}", .text) })]
    Search { what: String, rc: u32, text: String },
    #[error("{0}")]
    Config(String),
    #[error("the sync did not finish within {0:?}")]
    Overall(Duration),
    #[error("the state database failed: {0}")]
    State(String),
}

impl From<StateError> for DirectoryError {
    fn from(error: StateError) -> Self {
        DirectoryError::State(error.to_string())
    }
}

/// How long checking new directory settings may take in all: inside an API request's deadline.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks directory settings before they are put in force: binds with them (TLS verified
/// against their CA) and reads their base DN and users group. Changes nothing.
pub async fn check_settings(config: &Config) -> Result<(), DirectoryError> {
    let server = ldap::host_port(config);
    let check = async {
        let mut client = DirectoryClient::connect(config).await?;
        let checked = client.check_tree(&Tree::from_config(config)).await;
        client.close().await;
        checked
    };
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| {
            Err(DirectoryError::Timeout {
                server: format!("{}:{}", server.0, server.1),
            })
        })
}

impl DirectoryError {
    /// What was seen, in a few words, for status lines ("FreeIPA unreachable" only when it was).
    pub fn label(&self) -> &'static str {
        match self {
            DirectoryError::Connect { .. } => "FreeIPA unreachable",
            DirectoryError::Timeout { .. } | DirectoryError::Overall(_) => {
                "FreeIPA did not answer in time"
            }
            DirectoryError::Tls { .. } => "TLS with FreeIPA failed",
            DirectoryError::Bind { .. } => "FreeIPA refused the sync account's bind",
            DirectoryError::Missing { .. } => "an entry the sync needs is missing in FreeIPA",
            DirectoryError::SizeLimit { .. } => "a FreeIPA limit cut the member search short",
            DirectoryError::Search { .. } => "a FreeIPA search failed",
            DirectoryError::Config(_) => "the freeipa settings cannot be used",
            DirectoryError::State(_) => "the state database failed",
        }
    }

    /// The setting an error of a directory check points at.
    pub fn key(&self) -> &str {
        match self {
            DirectoryError::Connect { .. } | DirectoryError::Timeout { .. } => "freeipa.server",
            DirectoryError::Tls { .. } => "freeipa.ca_file",
            DirectoryError::Bind { .. } => "freeipa.bind_dn",
            DirectoryError::Missing { key, .. } => key,
            _ => "freeipa.server",
        }
    }
}

/// FreeIPA's rule for user names (its default `ipausersearchfields` check): letters, digits,
/// `.`, `_` and `-`, a trailing `$`, any case, up to 255 characters. The hub's login form checks
/// the same pattern (`valid_username_regex`, components/values.rs), so a member the sync
/// admits can log in, and a name it refuses is refused at login too.
pub const USERNAME_PATTERN: &str = r"^[a-zA-Z0-9_.][a-zA-Z0-9_.-]{0,252}[a-zA-Z0-9_.$-]?$";

/// Whether a hub can hold this uid as a user name; why not, if not.
pub fn admissible_uid(uid: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let body = uid.strip_suffix('$').unwrap_or(uid);
    let Some(first) = body.chars().next() else {
        return Err("it is empty".into());
    };
    if uid.len() > 254 {
        return Err(format!(
            "it is {} characters long, more than 254",
            uid.len()
        ));
    }
    if first == '-' {
        return Err("it starts with '-'".into());
    }
    match body.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!(
            "it holds {}, and a user name may hold only letters, digits, '.', '_', '-' and a trailing '$'",
            match c {
                ' ' => "a space".to_string(),
                c if c.is_control() => format!("the control character U+{:04X}", c as u32),
                c => format!("'{}'", c.escape_debug()),
            }
        )),
        None => Ok(()),
    }
}

/// A directory entry the sync does not admit, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SkippedEntry {
    pub uid: String,
    pub reason: String,
}

/// Turns what the directory says into the appliance's members and their admin rights, and the
/// entries no hub could hold a user for (skipped, with the reason).
pub fn members_from(
    snapshot: &Snapshot,
    config: &Config,
    api_admins: &std::collections::BTreeSet<String>,
) -> (Vec<Member>, Vec<SkippedEntry>) {
    let mut skipped = Vec::new();
    let configured: std::collections::BTreeSet<String> = config
        .hub
        .admin_users
        .iter()
        .map(|u| u.to_lowercase())
        .collect();
    let mut members: Vec<Member> = snapshot
        .users
        .iter()
        .filter(|user| match admissible_uid(&user.uid) {
            Ok(()) => true,
            Err(reason) => {
                skipped.push(SkippedEntry {
                    uid: user.uid.clone(),
                    reason,
                });
                false
            }
        })
        .map(|user| {
            let name = user.uid.to_lowercase();
            let mut sources = Vec::new();
            if !user.disabled {
                if configured.contains(&name) {
                    sources.push("config".to_string());
                }
                if user.in_admins_group {
                    sources.push("group".to_string());
                }
                if api_admins.contains(&name) {
                    sources.push("api".to_string());
                }
            }
            Member {
                name,
                uid: user.uid.clone(),
                cn: user.cn.clone(),
                mail: user.mail.clone(),
                disabled: user.disabled,
                admin_sources: sources,
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members.dedup_by(|a, b| a.name == b.name);
    skipped.sort_by(|a, b| a.uid.cmp(&b.uid));
    (members, skipped)
}

/// A result whose removals are held because they would drop more than half the active users.
/// The rest of it (additions, disables, re-enables, admin changes) was applied when it was read.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingSync {
    pub found_at: String,
    pub active_before: i64,
    /// Active users once the removals are confirmed.
    pub active_after: i64,
    /// Active users missing from the result, who keep their access until it is confirmed.
    pub would_remove: usize,
    #[serde(skip)]
    members: Arc<Vec<Member>>,
}

/// What of a sync result waits for an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Nothing,
    /// The removals by absence.
    Removals,
}

/// What status shows about the sync.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    pub last_run: Option<SyncRun>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub pending: Option<PendingSync>,
    pub active_users: i64,
    /// Directory entries in the users group that the last read did not admit (a name no hub
    /// could hold), with the reason. They cannot log in either.
    pub skipped: Vec<SkippedEntry>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub run: SyncRun,
    pub changes: SyncChanges,
}

struct Engine {
    /// The watermark of the last full read, and the tree it was read for: a config change
    /// that moves the tree makes the next run a full read.
    usn: Option<(String, u64)>,
    /// The connection kept for the next run, with the settings it was made for.
    client: Option<(String, DirectoryClient)>,
    runs_since_full: u32,
    pending: Option<PendingSync>,
}

/// Runs syncs one at a time and publishes their status.
#[derive(Clone)]
pub struct DirectorySync {
    state: Arc<State>,
    engine: Arc<Mutex<Engine>>,
    status: watch::Sender<SyncStatus>,
}

impl DirectorySync {
    pub fn new(state: Arc<State>) -> Self {
        let mut status = SyncStatus::default();
        if let Ok(runs) = state.sync_runs(1) {
            status.last_run = runs.into_iter().next();
        }
        status.active_users = state
            .count_users(crate::state::UserState::Active)
            .unwrap_or(0);
        Self {
            state,
            engine: Arc::new(Mutex::new(Engine {
                usn: None,
                client: None,
                runs_since_full: 0,
                pending: None,
            })),
            status: watch::channel(status).0,
        }
    }

    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// One sync. `full` skips the cheap change check.
    pub async fn run(
        &self,
        config: &Config,
        trigger: &str,
        full: bool,
    ) -> Result<SyncReport, DirectoryError> {
        crate::waits::note(|| "another directory sync, still running".into());
        let mut engine = self.engine.lock().await;
        let started = Instant::now();
        let started_at = now();
        let outcome = tokio::time::timeout(
            SYNC_TIMEOUT,
            self.run_locked(&mut engine, config, trigger, full, &started_at, started),
        )
        .await
        .unwrap_or(Err(DirectoryError::Overall(SYNC_TIMEOUT)));
        // Counted only after a sync that read the directory; a failed one changed nothing.
        let active_users = match &outcome {
            Ok(_) => self
                .state
                .call(|s| s.count_users(crate::state::UserState::Active))
                .await
                .ok(),
            Err(_) => None,
        };
        match &outcome {
            Ok(report) => {
                self.status.send_modify(|s| {
                    s.last_run = Some(report.run.clone());
                    s.last_error = None;
                    if report.run.outcome != "held" {
                        s.last_success_at = Some(report.run.started_at.clone());
                    }
                    s.pending = engine.pending.clone();
                    s.active_users = active_users.unwrap_or(s.active_users);
                });
            }
            Err(error) => {
                // Nothing was changed; the run is recorded with its reason.
                let run = SyncRun {
                    id: 0,
                    started_at: started_at.clone(),
                    duration_ms: started.elapsed().as_millis() as i64,
                    trigger: trigger.to_string(),
                    outcome: "failed".into(),
                    members: 0,
                    added: 0,
                    removed: 0,
                    disabled: 0,
                    reenabled: 0,
                    error: Some(error.to_string()),
                };
                let record = run.clone();
                let id = self
                    .state
                    .call(move |s| s.record_sync_run(&record))
                    .await
                    .unwrap_or(0);
                tracing::warn!(%error, "directory sync failed; the user table is unchanged");
                self.status.send_modify(|s| {
                    s.last_run = Some(SyncRun { id, ..run });
                    s.last_error = Some(error.to_string());
                });
            }
        }
        outcome
    }

    async fn run_locked(
        &self,
        engine: &mut Engine,
        config: &Config,
        trigger: &str,
        full: bool,
        started_at: &str,
        started: Instant,
    ) -> Result<SyncReport, DirectoryError> {
        let tree = Tree::from_config(config);
        // A bound connection is kept between runs: a bind costs FreeIPA a password hash
        // (tens of ms), far more than the change check itself. Any error drops it.
        let client_key = format!("{:?}", config.freeipa);
        let check_first =
            !full && engine.pending.is_none() && engine.runs_since_full < FULL_SYNC_EVERY;
        let tree_key = format!("{tree:?}");
        let usn = engine
            .usn
            .as_ref()
            .filter(|(key, _)| *key == tree_key)
            .map(|(_, usn)| *usn);
        let kept = engine
            .client
            .take()
            .filter(|(key, _)| *key == client_key)
            .map(|(_, client)| client);
        if let (true, Some(usn)) = (check_first, usn) {
            let mut reusable = None;
            if let Some(mut client) = kept
                && client.alive().await
            {
                reusable = Some(client);
            }
            let mut client = match reusable {
                Some(client) => client,
                None => DirectoryClient::connect(config).await?,
            };
            if !client.changed_since(&tree, usn).await? {
                engine.runs_since_full += 1;
                engine.client = Some((client_key, client));
                let members = self
                    .state
                    .call(|s| s.count_users(crate::state::UserState::Active))
                    .await?;
                let run = self.finish_run(started_at, started, trigger, "unchanged", members);
                let record = run.clone();
                let id = self.state.call(move |s| s.record_sync_run(&record)).await?;
                return Ok(SyncReport {
                    run: SyncRun { id, ..run },
                    changes: SyncChanges::default(),
                });
            }
            client.close().await;
        } else if let Some(client) = kept {
            client.close().await;
        }
        // A full read binds afresh: the server fixes limits and access at bind time, so a
        // kept connection could read with yesterday's grants.
        let mut client = DirectoryClient::connect(config).await?;
        let snapshot = client.snapshot(&tree).await?;
        engine.client = Some((client_key, client));
        if snapshot.admins_group_missing {
            tracing::info!(group = %tree.admins_group, "the admins group does not exist; admins come from the config and the API only");
        }
        let api_admins = self.state.call(|s| s.api_admins()).await?;
        let (members, skipped) = members_from(&snapshot, config, &api_admins);
        let members = Arc::new(members);
        self.note_skipped(skipped).await;
        let active_after = members.iter().filter(|m| !m.disabled).count() as i64;
        let crate::state::MemberDiff {
            changes: _,
            active_before,
            active_missing,
        } = {
            let members = members.clone();
            self.state.call(move |s| s.diff_members(&members)).await?
        };
        if active_before > 0 && active_after * 2 < active_before && active_missing > 0 {
            // Only the removals by absence wait: a directory that answers with half its members
            // missing may be wrong, but what it says of the members it does return (disabled,
            // added, admin or not) is applied at once, so a disabled admin loses access now.
            tracing::warn!(
                active_before,
                active_after,
                would_remove = active_missing,
                "directory sync held: its removals would drop more than half the users; they wait for POST /v1/sync/confirm, the rest is applied"
            );
            let details = serde_json::json!({ "active_before": active_before, "active_after": active_after, "would_remove": active_missing });
            let _ = self
                .state
                .call(move |s| s.record_event("directory-sync", "sync.held", details))
                .await;
            let report = self
                .apply(
                    started_at,
                    started,
                    trigger,
                    members.clone(),
                    Hold::Removals,
                )
                .await?;
            engine.pending = Some(PendingSync {
                found_at: started_at.to_string(),
                active_before,
                active_after,
                would_remove: active_missing,
                members,
            });
            return Ok(report);
        }
        engine.pending = None;
        let report = self
            .apply(started_at, started, trigger, members, Hold::Nothing)
            .await?;
        engine.usn = snapshot.usn.map(|usn| (tree_key, usn));
        engine.runs_since_full = 0;
        Ok(report)
    }

    /// Applies the held result, as an admin asked.
    pub async fn confirm(&self) -> Result<Option<SyncReport>, DirectoryError> {
        let mut engine = self.engine.lock().await;
        let Some(pending) = engine.pending.take() else {
            return Ok(None);
        };
        let started = Instant::now();
        let started_at = now();
        let report = self
            .apply(
                &started_at,
                started,
                "confirm",
                pending.members.clone(),
                Hold::Nothing,
            )
            .await?;
        engine.usn = None;
        self.status.send_modify(|s| {
            s.pending = None;
            s.last_run = Some(report.run.clone());
            s.active_users = pending.active_after;
        });
        Ok(Some(report))
    }

    async fn apply(
        &self,
        started_at: &str,
        started: Instant,
        trigger: &str,
        members: Arc<Vec<Member>>,
        hold: Hold,
    ) -> Result<SyncReport, DirectoryError> {
        let active = members.iter().filter(|m| !m.disabled).count() as i64;
        let (run, (changes, id)) = match hold {
            Hold::Nothing => {
                let run = self.finish_run(started_at, started, trigger, "applied", active);
                let record = run.clone();
                let applied = self
                    .state
                    .call(move |s| s.apply_members(&members, &record))
                    .await?;
                (run, applied)
            }
            Hold::Removals => {
                let run = self.finish_run(started_at, started, trigger, "held", active);
                let record = run.clone();
                let applied = self
                    .state
                    .call(move |s| s.apply_members_keeping_missing(&members, &record))
                    .await?;
                (run, applied)
            }
        };
        if !changes.is_empty() {
            tracing::info!(
                added = changes.added.len(),
                removed = changes.removed.len(),
                disabled = changes.disabled.len(),
                reenabled = changes.reenabled.len(),
                "directory sync applied"
            );
        }
        Ok(SyncReport {
            run: SyncRun {
                id,
                added: changes.added.len() as i64,
                removed: changes.removed.len() as i64,
                disabled: changes.disabled.len() as i64,
                reenabled: changes.reenabled.len() as i64,
                ..run
            },
            changes,
        })
    }

    /// Publishes the entries the read did not admit; each newly skipped one is logged and
    /// recorded once (not at every run).
    async fn note_skipped(&self, skipped: Vec<SkippedEntry>) {
        let before = self.status.borrow().skipped.clone();
        let new: Vec<&SkippedEntry> = skipped.iter().filter(|s| !before.contains(s)).collect();
        if !new.is_empty() {
            let events: Vec<(&'static str, serde_json::Value)> = new
                .iter()
                .map(|entry| {
                    tracing::warn!(uid = %entry.uid.escape_debug(), reason = %entry.reason, "a directory member is not admitted: no hub can hold this user name; rename the user in FreeIPA");
                    (
                        "user.skipped",
                        serde_json::json!({ "uid": entry.uid, "reason": entry.reason }),
                    )
                })
                .collect();
            let recorded = self
                .state
                .call(move |s| s.record_events("directory-sync", &events))
                .await;
            if let Err(error) = recorded {
                tracing::error!(%error, "cannot record the skipped directory entries");
            }
        }
        if before != skipped {
            self.status.send_modify(|s| s.skipped = skipped);
        }
    }

    fn finish_run(
        &self,
        started_at: &str,
        started: Instant,
        trigger: &str,
        outcome: &str,
        members: i64,
    ) -> SyncRun {
        SyncRun {
            id: 0,
            started_at: started_at.to_string(),
            duration_ms: started.elapsed().as_millis() as i64,
            trigger: trigger.to_string(),
            outcome: outcome.to_string(),
            members,
            added: 0,
            removed: 0,
            disabled: 0,
            reenabled: 0,
            error: None,
        }
    }
}

/// The loop name the watchdog knows.
pub const LOOP_NAME: &str = "directory-sync";

/// Syncs every `freeipa.sync_interval_seconds`, and soon after the directory reports a change
/// through content sync (RFC 4533 refreshAndPersist) where the server offers it, until `cancel`
/// is cancelled. The boot step runs the first sync; the loop takes over after a minute.
pub async fn run_loop(
    sync: DirectorySync,
    config: watch::Receiver<Option<Arc<Config>>>,
    heartbeats: crate::systemd::Heartbeats,
    cancel: CancellationToken,
) {
    let job = SyncLoop {
        sync,
        config,
        changes: Arc::new(tokio::sync::Notify::new()),
        watcher: None,
        watched: None,
    };
    Driver::new(LOOP_NAME, heartbeats, cancel)
        .first_run_after(Duration::from_secs(60))
        .drive(job)
        .await;
}

struct SyncLoop {
    sync: DirectorySync,
    config: watch::Receiver<Option<Arc<Config>>>,
    /// Woken by the content-sync watcher.
    changes: Arc<tokio::sync::Notify>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// The config the watcher follows.
    watched: Option<Arc<Config>>,
}

impl SyncLoop {
    /// Restarts the content-sync watcher when the config changed.
    fn follow_config(&mut self) {
        let current = self.config.borrow().clone();
        // Reloads replace the Arc even when nothing changed: compare the values.
        if current.as_deref() != self.watched.as_deref() {
            if let Some(old) = self.watcher.take() {
                old.abort();
            }
            self.watched = current.clone();
            self.watcher =
                current.map(|config| tokio::spawn(watch_directory(config, self.changes.clone())));
        }
    }
}

impl Drop for SyncLoop {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

impl Job for SyncLoop {
    type Wake = ();

    async fn wake(&mut self) -> Option<()> {
        loop {
            self.follow_config();
            tokio::select! {
                () = self.changes.notified() => {
                    // Let a burst of related changes (a group and its members) land first.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Some(());
                }
                changed = self.config.changed() => changed.ok()?,
            }
        }
    }

    async fn run(&mut self, _: Why<()>) -> Outcome {
        let Some(current) = self.config.borrow().clone() else {
            return Outcome::Done(Some(Duration::from_secs(5)));
        };
        // A failed sync is recorded and shown by the sync itself; the next one comes at the
        // interval (the directory's outage keeps everyone, so there is nothing to hurry).
        let _ = self.sync.run(&current, "periodic", false).await;
        Outcome::Done(Some(Duration::from_secs(u64::from(
            current.freeipa.sync_interval_seconds,
        ))))
    }
}

/// Keeps a content-sync search open, reconnecting with backoff (5 s to 5 min, reset after a
/// search that lived a minute); each reported change wakes the sync loop. A server without
/// content sync just leaves the periodic sync.
pub async fn watch_directory(config: Arc<Config>, changes: Arc<tokio::sync::Notify>) {
    let tree = Tree::from_config(&config);
    let backoff = crate::driver::backoff(Duration::from_secs(5), Duration::from_secs(300));
    let mut delays = backoff.build();
    loop {
        let started = Instant::now();
        let outcome = match DirectoryClient::connect(&config).await {
            Ok(client) => client.persist(&tree, || changes.notify_one()).await,
            Err(error) => Err(error),
        };
        if started.elapsed() > Duration::from_secs(60) {
            delays = backoff.build();
        }
        let retry_in = delays.next().unwrap_or(Duration::from_secs(300));
        if let Err(error) = outcome {
            tracing::info!(%error, ?retry_in, "directory change notifications unavailable; periodic sync continues");
        }
        tokio::time::sleep(retry_in).await;
    }
}

#[cfg(test)]
mod tests {
    use super::admissible_uid;

    #[test]
    fn user_names_follow_freeipas_rule() {
        for good in [
            "alice",
            "Mixed.Case",
            "9lives",
            "_svc",
            "a.b-c",
            "host$",
            "x",
        ] {
            assert_eq!(admissible_uid(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("sl/ash", "'/'"),
            ("admin ", "a space"),
            ("", "empty"),
            ("-lead", "starts with '-'"),
            ("tab\tx", "U+0009"),
            ("ümlaut", "'ü'"),
            ("mid$dle", "'$'"),
        ] {
            let reason = admissible_uid(bad).expect_err(bad);
            assert!(reason.contains(why), "{bad}: {reason}");
        }
        assert!(admissible_uid(&"a".repeat(255)).is_err());
        assert_eq!(admissible_uid(&"a".repeat(254)), Ok(()));
    }
}
