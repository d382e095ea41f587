//! One enforcement run: the plan (a pure function of the user table and the hub's users) and
//! its execution with bounded concurrency, retries and one event per change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::client::{HubClient, HubError, HubUser};
use crate::state::{State, UserRecord, UserState};

/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// Attempts per change when the hub is briefly unavailable.
const ATTEMPTS: u32 = 3;
/// How long a removed user's server may take to stop before the run moves on (the stop stays
/// requested; the user is deleted on a later run).
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What a run must change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Active members missing from the hub, by admin flag.
    pub create: Vec<String>,
    pub create_admins: Vec<String>,
    /// Hub users whose admin flag differs from the computed one.
    pub set_admin: Vec<(String, bool)>,
    /// Hub users the directory has removed or disabled.
    pub purge: Vec<(String, UserState)>,
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
pub fn plan(users: &[UserRecord], hub: &[HubUser]) -> Plan {
    let in_hub: BTreeMap<&str, &HubUser> = hub.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut plan = Plan::default();
    for user in users {
        let admin = !user.admin_sources.is_empty();
        match (user.state, in_hub.get(user.name.as_str())) {
            (UserState::Active, None) if admin => plan.create_admins.push(user.name.clone()),
            (UserState::Active, None) => plan.create.push(user.name.clone()),
            (UserState::Active, Some(existing)) if existing.admin != admin => {
                plan.set_admin.push((user.name.clone(), admin));
            }
            (UserState::Active, Some(_)) => {}
            (state, Some(_)) => plan.purge.push((user.name.clone(), state)),
            (_, None) => {}
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
    pub tokens_revoked: usize,
    /// Changes that failed after their retries; the next run tries again.
    pub failed: usize,
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
    state: &State,
    users: &[UserRecord],
) -> Result<EnforceReport, HubError> {
    let started = Instant::now();
    let requests_before = client.requests();
    let hub = retried(|| client.users()).await?;
    let plan = plan(users, &hub);
    let mut report = EnforceReport {
        hub_users: hub.len(),
        ..Default::default()
    };

    // Bulk creation: one request per 500 names.
    for (names, admin) in [(&plan.create, false), (&plan.create_admins, true)] {
        if names.is_empty() {
            continue;
        }
        match retried(|| client.create_users(names, admin)).await {
            Ok(_) => {
                report.created += names.len();
                record(
                    state,
                    &names
                        .iter()
                        .map(|name| {
                            (
                                "hub.user-created",
                                serde_json::json!({ "user": name, "admin": admin }),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
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
                let outcome = retried(|| client.set_admin(&name, admin)).await;
                if outcome.is_ok() {
                    record(
                        state,
                        &[(
                            "hub.admin-set",
                            serde_json::json!({ "user": name, "admin": admin }),
                        )],
                    );
                }
                (name, admin, outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (name, _, outcome) in admin_changes {
        match outcome {
            Ok(()) => report.admin_changed += 1,
            Err(error) => {
                tracing::warn!(%error, user = %name, "setting the admin flag failed");
                report.failed += 1;
            }
        }
    }

    let purges = futures_util::stream::iter(plan.purge.clone())
        .map(|(name, why)| {
            let client = client.clone();
            async move {
                let outcome = purge(&client, &name).await;
                if let Ok(purged) = &outcome {
                    record(
                        state,
                        &[(
                            "hub.user-deleted",
                            serde_json::json!({
                                "user": name,
                                "because": why.as_str(),
                                "server_stopped": purged.server_stopped,
                                "tokens_revoked": purged.tokens_revoked,
                                "home_volume": "kept",
                            }),
                        )],
                    );
                }
                (name, why, outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (name, _, outcome) in purges {
        match outcome {
            Ok(purged) => {
                report.purged += 1;
                report.servers_stopped += usize::from(purged.server_stopped);
                report.tokens_revoked += purged.tokens_revoked;
            }
            Err(error) => {
                tracing::warn!(%error, user = %name, "removing the hub user failed; retried on the next run");
                report.failed += 1;
            }
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
    Ok(report)
}

/// Records what was just done at the hub, at once: an event written only when the whole run
/// ends would be lost with the process (a SIGTERM or kill -9 in the middle of 1,000 removals
/// left deletions at the hub without their event).
fn record(state: &State, events: &[(&'static str, serde_json::Value)]) {
    if let Err(error) = state.record_events("hub-sync", events) {
        tracing::error!(%error, "cannot record the hub changes");
    }
}

struct Purged {
    server_stopped: bool,
    tokens_revoked: usize,
}

/// Revokes every token (API access ends at once), stops the server, then deletes the hub user
/// (which ends the login cookie). Each step is idempotent, so a run cut short is finished by
/// the next one.
async fn purge(client: &HubClient, name: &str) -> Result<Purged, HubError> {
    let tokens = retried(|| client.tokens(name)).await?;
    let mut revoked = 0;
    for token in &tokens {
        if retried(|| client.revoke_token(name, &token.id)).await? {
            revoked += 1;
        }
    }
    let stopped = retried(|| client.stop_server(name, STOP_WAIT)).await?;
    retried(|| client.delete_user(name)).await?;
    Ok(Purged {
        server_stopped: stopped == super::ServerOutcome::Done,
        tokens_revoked: revoked,
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
        }
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
            hub("locked", true),
            hub("made-by-hand", false),
        ];
        let plan = plan(&users, &hub_users);
        assert_eq!(plan.create, ["new"]);
        assert_eq!(plan.create_admins, ["newadmin"]);
        assert_eq!(
            plan.set_admin,
            [("promote".to_string(), true), ("demote".to_string(), false)]
        );
        assert_eq!(
            plan.purge,
            [
                ("gone".to_string(), UserState::Removed),
                ("locked".to_string(), UserState::Disabled)
            ]
        );
    }

    #[test]
    fn an_empty_table_plans_nothing() {
        assert!(plan(&[], &[hub("someone", true)]).is_empty());
    }
}
