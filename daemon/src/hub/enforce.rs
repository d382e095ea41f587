//! One enforcement run: the plan (a pure function of the user table and the hub's users) and
//! its execution with bounded concurrency, retries and one event per change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::client::{HubClient, HubError, HubUser};
use crate::state::{Change, Intent, State, StateError, UserRecord, UserState};

/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// Removals whose events are recorded in one transaction.
const EVENT_BATCH: usize = 64;
/// Attempts per change when the hub is briefly unavailable.
const ATTEMPTS: u32 = 3;
/// How long a removed user's server may take to stop before the run moves on (the stop stays
/// requested; the user is deleted on a later run).
const STOP_WAIT: Duration = Duration::from_secs(60);
/// The actor of the hub changes' events.
const ACTOR: &str = "hub-sync";
/// The events of the hub changes, which are also the actions of their intents.
pub const CREATED: &str = "hub.user-created";
pub const ADMIN_SET: &str = "hub.admin-set";
pub const DELETED: &str = "hub.user-deleted";

/// What a run must change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Active members missing from the hub, by admin flag.
    pub create: Vec<String>,
    pub create_admins: Vec<String>,
    /// Hub users whose admin flag differs from the computed one.
    pub set_admin: Vec<(String, bool)>,
    /// Hub users the directory has removed or disabled, with whether the hub listed a server
    /// of theirs (running, starting or stopping).
    pub purge: Vec<(String, UserState, bool)>,
    /// Admin flags changed in the hub's own admin page since pangeod last left them: kept as
    /// grants (or revocations) while the user is a member.
    pub noticed: Vec<(String, bool)>,
    /// Flags found at the hub as expected, not yet written down as what pangeod left there.
    pub seen: Vec<(String, bool)>,
    /// Grants made in the hub of users who are no longer members: they end.
    pub ended: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.create_admins.is_empty()
            && self.set_admin.is_empty()
            && self.purge.is_empty()
    }
}

/// The difference between the user table and the hub. Hub users the table does not know are
/// left alone; a user is only ever purged for a state a complete sync wrote.
///
/// An admin flag at the hub that differs from the one pangeod last left there was changed in
/// the hub's admin page (the Edit User dialogue): it is noticed and kept, not undone, unless a
/// change of pangeod's own for that user is still open (`pending`, its intents).
pub fn plan(users: &[UserRecord], hub: &[HubUser], pending: &BTreeSet<String>) -> Plan {
    let in_hub: BTreeMap<&str, &HubUser> = hub.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut plan = Plan::default();
    for user in users {
        let name = &user.name;
        match (user.state, in_hub.get(name.as_str())) {
            (UserState::Active, None) if user.is_admin() => plan.create_admins.push(name.clone()),
            (UserState::Active, None) => plan.create.push(name.clone()),
            (UserState::Active, Some(existing)) => {
                let noticed = !pending.contains(name)
                    && user
                        .hub_admin_seen
                        .is_some_and(|seen| seen != existing.admin);
                let admin = if noticed {
                    plan.noticed.push((name.clone(), existing.admin));
                    existing.admin
                } else {
                    user.is_admin()
                };
                if existing.admin != admin {
                    plan.set_admin.push((name.clone(), admin));
                } else if !noticed && user.hub_admin_seen != Some(admin) {
                    plan.seen.push((name.clone(), admin));
                }
            }
            (state, existing) => {
                if user.hub_grant.is_some() {
                    plan.ended.push(name.clone());
                }
                if let Some(existing) = existing {
                    plan.purge.push((
                        name.clone(),
                        state,
                        existing.server.is_some() || existing.pending.is_some(),
                    ));
                }
            }
        }
    }
    plan
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct EnforceReport {
    pub hub_users: usize,
    pub created: usize,
    pub admin_changed: usize,
    pub purged: usize,
    pub servers_stopped: usize,
    /// Changes that failed after their retries; the next run tries again.
    pub failed: usize,
    /// Changes a run cut short had made, recorded by this one from their intents.
    pub settled: usize,
    /// Members the hub refused to create (name, the hub's reason); the others were created.
    pub refused: Vec<(String, String)>,
    /// HTTP requests to the hub, the listing and retries included.
    pub requests: usize,
    pub duration_ms: u64,
}

/// Every user in the table, page by page.
pub fn all_users(state: &State) -> Result<Vec<UserRecord>, HubError> {
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .users(None, after.as_deref(), 5000)
            .map_err(|e| HubError::Config(format!("the state database failed: {e}")))?;
        let done = page.len() < 5000;
        after = page.last().map(|u| u.name.clone());
        users.extend(page);
        if done {
            return Ok(users);
        }
    }
}

/// Retries `op` on transient errors, with a short backoff.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, HubError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Makes the hub equal to `users`, the user table as [`all_users`] read it. A hub that cannot
/// even be listed fails the run (the caller retries); a single change that fails is counted and
/// retried by the next run. `state` records the events.
pub async fn run(
    client: &HubClient,
    state: &Arc<State>,
    users: &[UserRecord],
) -> Result<EnforceReport, HubError> {
    run_with_listing(client, state, users)
        .await
        .map(|(report, _)| report)
}

/// [`run`], which also returns the hub's users as the run leaves them: its listing with the
/// changes it made applied (created users added, admin flags set, deleted users gone).
pub async fn run_with_listing(
    client: &HubClient,
    state: &Arc<State>,
    users: &[UserRecord],
) -> Result<(EnforceReport, Vec<HubUser>), HubError> {
    let started = Instant::now();
    let requests_before = client.requests();
    let hub = retried(|| client.users()).await?;
    // The open intents, read once: the plan must not take pangeod's own unfinished changes for
    // the hub's, and `settle` finishes them.
    let intents = match on_state(state, |s| s.intents()).await {
        Ok(intents) => Some(intents),
        Err(error) => {
            tracing::error!(%error, "cannot read the open hub intents; no admin change in the hub is noticed, and none is settled, this run");
            None
        }
    };
    let pending: BTreeSet<String> = match &intents {
        Some(intents) => intents.iter().map(|i| i.user.clone()).collect(),
        None => users.iter().map(|u| u.name.clone()).collect(),
    };
    let plan = plan(users, &hub, &pending);
    if !plan.noticed.is_empty() || !plan.ended.is_empty() {
        tracing::info!(noticed = ?plan.noticed, ended = ?plan.ended, "admin flags changed in the hub's admin page are kept while their users are members");
    }
    let (noticed, seen, ended) = (plan.noticed.clone(), plan.seen.clone(), plan.ended.clone());
    if let Err(error) = on_state(state, move |s| s.note_hub_admin(&noticed, &seen, &ended)).await {
        tracing::error!(%error, "cannot write down the hub's admin flags; the next run notices them again");
    }
    let mut after: BTreeMap<String, HubUser> =
        hub.iter().map(|u| (u.name.clone(), u.clone())).collect();
    let mut report = EnforceReport {
        hub_users: hub.len(),
        ..Default::default()
    };

    report.settled = settle(state, &hub, intents.unwrap_or_default()).await;

    // Bulk creation: one request per 500 names.
    for (names, admin) in [(&plan.create, false), (&plan.create_admins, true)] {
        if names.is_empty() {
            continue;
        }
        let changes: Vec<Change> = names
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    CREATED,
                    serde_json::json!({ "user": name, "admin": admin }),
                )
            })
            .collect();
        if !begin(state, &changes).await {
            report.failed += names.len();
            continue;
        }
        match retried(|| client.create_users(names, admin)).await {
            Ok(refused) => {
                let refused_names: std::collections::BTreeSet<&str> =
                    refused.iter().map(|(n, _)| n.as_str()).collect();
                let (made, not_made): (Vec<Change>, Vec<Change>) = changes
                    .into_iter()
                    .partition(|(name, _, _)| !refused_names.contains(name.as_str()));
                report.created += made.len();
                for (name, _, _) in &made {
                    after.insert(
                        name.clone(),
                        HubUser {
                            name: name.clone(),
                            admin,
                            server: None,
                            pending: None,
                            last_activity: None,
                        },
                    );
                }
                complete(state, made).await;
                if !not_made.is_empty() {
                    let dropped = not_made
                        .iter()
                        .map(|(n, a, _)| (n.clone(), a.to_string()))
                        .collect::<Vec<_>>();
                    if let Err(error) = on_state(state, move |s| s.drop_intents(&dropped)).await {
                        tracing::error!(%error, "cannot drop the intents of refused users");
                    }
                    note_refused(state, &refused).await;
                    report.refused.extend(refused);
                }
            }
            Err(error) => {
                tracing::warn!(%error, users = names.len(), "creating hub users failed");
                report.failed += names.len();
            }
        }
    }

    let admin_changes = futures_util::stream::iter(plan.set_admin.clone())
        .map(|(name, admin)| {
            let client = client.clone();
            async move {
                let change = vec![(
                    name.clone(),
                    ADMIN_SET,
                    serde_json::json!({ "user": name, "admin": admin }),
                )];
                if !begin(state, &change).await {
                    return (name, admin, Err(unrecorded()));
                }
                let outcome = retried(|| client.set_admin(&name, admin)).await;
                if outcome.is_ok() {
                    complete(state, change).await;
                }
                (name, admin, outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (name, admin, outcome) in admin_changes {
        match outcome {
            Ok(()) => {
                report.admin_changed += 1;
                if let Some(user) = after.get_mut(&name) {
                    user.admin = admin;
                }
            }
            Err(error) => {
                tracing::warn!(%error, user = %name, "setting the admin flag failed");
                report.failed += 1;
            }
        }
    }

    // Removals: one transaction writes down every removal before any is made, and their
    // events replace those intents in batches as they are made. Two synced transactions per
    // user would cost more than the hub's own DELETE; a run cut short leaves intents, which the
    // next run settles against the hub, so the log still matches the hub one for one.
    let intents: Vec<Change> = plan
        .purge
        .iter()
        .map(|(name, why, _)| {
            (
                name.clone(),
                DELETED,
                serde_json::json!({ "user": name, "because": why.as_str(), "home_volume": "kept" }),
            )
        })
        .collect();
    if !intents.is_empty() && !begin(state, &intents).await {
        report.failed += intents.len();
    } else {
        let mut purges = futures_util::stream::iter(plan.purge.clone())
            .map(|(name, why, server)| {
                let client = client.clone();
                async move {
                    let outcome = purge(&client, &name, server).await;
                    (name, why, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY);
        let mut done: Vec<Change> = Vec::new();
        while let Some((name, why, outcome)) = purges.next().await {
            match outcome {
                Ok(purged) => {
                    report.purged += 1;
                    after.remove(&name);
                    report.servers_stopped += usize::from(purged.server_stopped);
                    done.push((
                        name.clone(),
                        DELETED,
                        serde_json::json!({
                            "user": name,
                            "because": why.as_str(),
                            "server_stopped": purged.server_stopped,
                            "tokens": "deleted with the hub user",
                            "home_volume": "kept",
                        }),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, user = %name, "removing the hub user failed; retried on the next run");
                    report.failed += 1;
                }
            }
            if done.len() >= EVENT_BATCH {
                complete(state, std::mem::take(&mut done)).await;
            }
        }
        if !done.is_empty() {
            complete(state, done).await;
        }
    }

    report.requests = client.requests() - requests_before;
    report.duration_ms = started.elapsed().as_millis() as u64;
    if !plan.is_empty() {
        tracing::info!(
            created = report.created,
            admin_changed = report.admin_changed,
            purged = report.purged,
            failed = report.failed,
            requests = report.requests,
            duration_ms = report.duration_ms,
            "hub sync applied"
        );
    }
    Ok((report, after.into_values().collect()))
}

/// Runs a state call on the blocking pool: SQLite waits for the disk (each commit is synced),
/// which must not hold up the async threads.
async fn on_state<T, F>(state: &Arc<State>, call: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&State) -> Result<T, StateError> + Send + 'static,
{
    use crate::state::StateCall;
    state.call(call).await.map_err(|e| e.to_string())
}

/// Writes down the changes about to be made. A change that cannot be written down is not
/// made (the audit log would miss it); the next run tries again.
async fn begin(state: &Arc<State>, changes: &[Change]) -> bool {
    let owned = changes.to_vec();
    match on_state(state, move |s| s.begin_intents(&owned)).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, changes = changes.len(), "cannot write down hub changes before making them; they are left for the next run");
            false
        }
    }
}

/// Records the changes just made: their events replace their intents. If that fails the
/// intents stay, and the next run records them once it sees the changes at the hub.
async fn complete(state: &Arc<State>, changes: Vec<Change>) {
    let count = changes.len();
    if let Err(error) = on_state(state, move |s| s.complete_intents(ACTOR, &changes)).await {
        tracing::error!(%error, changes = count, "cannot record hub changes just made; the next run records them from their intents");
    }
}

/// Logs and records the names the hub refused, each once per process (a refused name is
/// refused again at every run, which would flood the log and the event log).
async fn note_refused(state: &Arc<State>, refused: &[(String, String)]) {
    static NOTED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let new: Vec<(String, String)> = {
        let mut noted = NOTED.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .iter()
            .filter(|(name, _)| noted.insert(name.clone()))
            .cloned()
            .collect()
    };
    if new.is_empty() {
        return;
    }
    for (name, reason) in &new {
        tracing::warn!(user = %name.escape_debug(), %reason, "the hub refused to create this member; the others were created");
    }
    let events: Vec<(String, serde_json::Value)> = new
        .into_iter()
        .map(|(name, reason)| {
            (
                "hub.user-refused".to_string(),
                serde_json::json!({ "user": name, "reason": reason }),
            )
        })
        .collect();
    if let Err(error) = on_state(state, move |s| {
        let events: Vec<(&str, serde_json::Value)> = events
            .iter()
            .map(|(a, d)| (a.as_str(), d.clone()))
            .collect();
        s.record_events(ACTOR, &events)
    })
    .await
    {
        tracing::error!(%error, "cannot record the refused users");
    }
}

fn unrecorded() -> HubError {
    HubError::Config(
        "the change was not made: pangeod could not write it down first (see the state database error in the log)".into(),
    )
}

/// Settles what a run cut short (kill -9, power loss) left between an intent and its event:
/// a change the hub shows was made gets its event now, one it does not show is dropped (the
/// plan makes it again if it is still wanted). Returns how many changes got their event.
async fn settle(state: &Arc<State>, hub: &[HubUser], intents: Vec<Intent>) -> usize {
    if intents.is_empty() {
        return 0;
    }
    let in_hub: BTreeMap<&str, &HubUser> = hub.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut made: Vec<Change> = Vec::new();
    let mut not_made: Vec<(String, String)> = Vec::new();
    for intent in intents {
        let user = in_hub.get(intent.user.as_str());
        let seen = match intent.action.as_str() {
            CREATED => user.is_some().then_some(CREATED),
            DELETED => user.is_none().then_some(DELETED),
            ADMIN_SET => user
                .is_some_and(|u| {
                    intent.details.get("admin").and_then(|a| a.as_bool()) == Some(u.admin)
                })
                .then_some(ADMIN_SET),
            _ => None,
        };
        match seen {
            Some(action) => {
                let mut details = intent.details;
                if let Some(map) = details.as_object_mut() {
                    map.insert(
                        "recorded".into(),
                        serde_json::json!(format!(
                            "by the next run: the change began at {} and the run was cut short",
                            intent.started_at
                        )),
                    );
                }
                made.push((intent.user, action, details));
            }
            None => not_made.push((intent.user, intent.action)),
        }
    }
    let count = made.len();
    if count > 0 {
        tracing::info!(
            changes = count,
            "recording hub changes that a run cut short had made"
        );
        complete(state, made).await;
    }
    if !not_made.is_empty()
        && let Err(error) = on_state(state, move |s| s.drop_intents(&not_made)).await
    {
        tracing::error!(%error, "cannot drop the intents of changes that were not made");
    }
    count
}

struct Purged {
    server_stopped: bool,
}

/// Stops the user's server if the hub listed one, then deletes the hub user: one request for a
/// user without a server (most removals). Deleting a user deletes their API tokens with it, in
/// the hub's own transaction (JupyterHub's `User.api_tokens` cascade), and ends the login
/// cookie, so access ends at once without a request per token. A server started after the
/// listing is stopped by the hub's own DELETE. Each step is idempotent, so a run cut short is
/// finished by the next one.
async fn purge(client: &HubClient, name: &str, server: bool) -> Result<Purged, HubError> {
    let stopped = if server {
        retried(|| client.stop_server(name, STOP_WAIT)).await? == super::ServerOutcome::Done
    } else {
        false
    };
    retried(|| client.delete_user(name)).await?;
    Ok(Purged {
        server_stopped: stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, state: UserState, admin: bool) -> UserRecord {
        UserRecord {
            name: name.into(),
            uid: name.into(),
            cn: name.into(),
            mail: String::new(),
            state,
            admin_sources: if admin { vec!["group".into()] } else { vec![] },
            first_seen: String::new(),
            last_seen: String::new(),
            changed_at: String::new(),
            hub_grant: None,
            hub_admin_seen: None,
        }
    }

    fn seen(name: &str, admin: bool, seen: bool, grant: Option<bool>) -> UserRecord {
        UserRecord {
            hub_admin_seen: Some(seen),
            hub_grant: grant,
            ..record(name, UserState::Active, admin)
        }
    }

    #[test]
    fn admin_flags_changed_in_the_hub_are_noticed_and_kept() {
        let users = [
            // pangeod left these flags; the hub shows them changed: noticed, not undone.
            seen("granted", false, false, None),
            seen("revoked", true, true, None),
            // Grants noticed earlier outrank the directory's sources.
            seen("kept", false, true, Some(true)),
            seen("kept-revoked", true, false, Some(false)),
            // A change of pangeod's own still open (an intent): not taken for the hub's.
            seen("pending", true, false, None),
            // Never seen yet (the first run): made as computed, and written down.
            record("first", UserState::Active, true),
            // Gone from the users group: the grant ends.
            UserRecord {
                hub_grant: Some(true),
                ..record("left", UserState::Removed, false)
            },
        ];
        let hub_users = [
            hub("granted", true),
            hub("revoked", false),
            hub("kept", true),
            hub("kept-revoked", false),
            hub("pending", true),
            hub("first", false),
        ];
        let pending = BTreeSet::from(["pending".to_string()]);
        let plan = plan(&users, &hub_users, &pending);
        assert_eq!(
            plan.noticed,
            [
                ("granted".to_string(), true),
                ("revoked".to_string(), false)
            ]
        );
        assert_eq!(plan.set_admin, [("first".to_string(), true)]);
        assert_eq!(plan.seen, [("pending".to_string(), true)]);
        assert_eq!(plan.ended, ["left"]);
        assert!(plan.purge.is_empty());
    }

    fn hub(name: &str, admin: bool) -> HubUser {
        HubUser {
            name: name.into(),
            admin,
            server: None,
            pending: None,
            last_activity: None,
        }
    }

    #[test]
    fn the_plan_is_the_difference_and_leaves_unknown_hub_users_alone() {
        let users = [
            record("new", UserState::Active, false),
            record("newadmin", UserState::Active, true),
            record("promote", UserState::Active, true),
            record("demote", UserState::Active, false),
            record("same", UserState::Active, true),
            record("gone", UserState::Removed, false),
            record("locked", UserState::Disabled, false),
            record("gone-not-in-hub", UserState::Removed, false),
        ];
        let hub_users = [
            hub("promote", false),
            hub("demote", true),
            hub("same", true),
            hub("gone", false),
            HubUser {
                pending: Some("spawn".into()),
                ..hub("locked", true)
            },
            hub("made-by-hand", false),
        ];
        let plan = plan(&users, &hub_users, &BTreeSet::new());
        assert_eq!(plan.create, ["new"]);
        assert_eq!(plan.create_admins, ["newadmin"]);
        assert_eq!(
            plan.set_admin,
            [("promote".to_string(), true), ("demote".to_string(), false)]
        );
        assert_eq!(
            plan.purge,
            [
                ("gone".to_string(), UserState::Removed, false),
                ("locked".to_string(), UserState::Disabled, true)
            ],
            "a server that is starting is stopped before the user is deleted"
        );
    }

    #[test]
    fn an_empty_table_plans_nothing() {
        assert!(plan(&[], &[hub("someone", true)], &BTreeSet::new()).is_empty());
    }
}
