//! The directory's users as the appliance knows them, the admins granted through the API, and
//! the record of sync runs.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{State, StateError, now};

/// A user's access, as decided by the last applied sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// A member, enabled: may log in.
    Active,
    /// A member whose account is locked in FreeIPA.
    Disabled,
    /// No longer a member (or deleted). Their home volume is kept.
    Removed,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Disabled => "disabled",
            UserState::Removed => "removed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(UserState::Active),
            "disabled" => Some(UserState::Disabled),
            "removed" => Some(UserState::Removed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserRecord {
    /// The hub user name: the FreeIPA uid in lower case.
    pub name: String,
    /// The uid as FreeIPA spells it.
    pub uid: String,
    pub cn: String,
    pub mail: String,
    pub state: UserState,
    /// Why the user is a hub admin: `config`, `group`, `api`; empty for none.
    pub admin_sources: Vec<String>,
    pub first_seen: String,
    /// The last sync that found the user a member.
    pub last_seen: String,
    pub changed_at: String,
    /// An admin flag set in the hub's own admin page, which pangeod keeps while the user is a
    /// member: `true` granted there, `false` revoked there; null for none. It outranks
    /// `admin_sources`.
    pub hub_grant: Option<bool>,
    /// The admin flag pangeod last left at the hub (to notice a change made there).
    #[serde(skip)]
    pub hub_admin_seen: Option<bool>,
}

impl UserRecord {
    /// Whether the user is a hub admin: a grant or revocation made in the hub, else any source.
    pub fn is_admin(&self) -> bool {
        self.hub_grant.unwrap_or(!self.admin_sources.is_empty())
    }
}

/// What a sync found for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub uid: String,
    pub cn: String,
    pub mail: String,
    pub disabled: bool,
    pub admin_sources: Vec<String>,
}

impl SyncRun {
    /// A run record for a sync applied now, by `trigger`, before its counts are known (what
    /// tests and benches use to fill the user table without a directory).
    pub fn applied_now(trigger: &str) -> Self {
        Self {
            id: 0,
            started_at: super::now(),
            duration_ms: 0,
            trigger: trigger.into(),
            outcome: "applied".into(),
            members: 0,
            added: 0,
            removed: 0,
            disabled: 0,
            reenabled: 0,
            error: None,
        }
    }
}

/// The changes an applied sync made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub disabled: Vec<String>,
    pub reenabled: Vec<String>,
    pub admin_changed: Vec<String>,
}

impl SyncChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.disabled.is_empty()
            && self.reenabled.is_empty()
            && self.admin_changed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncRun {
    pub id: i64,
    pub started_at: String,
    pub duration_ms: i64,
    /// `periodic`, `api`, `boot`, `confirm`.
    pub trigger: String,
    /// `applied`, `unchanged` (nothing changed in the directory), `held` (waiting for
    /// confirmation) or `failed`.
    pub outcome: String,
    pub members: i64,
    pub added: i64,
    pub removed: i64,
    pub disabled: i64,
    pub reenabled: i64,
    pub error: Option<String>,
}

/// Per-user events are written up to this many changes in one sync; beyond it one summary
/// event lists the counts and the first names, so a first sync of 100,000 users stays fast.
const MAX_USER_EVENTS: usize = 1000;

impl State {
    /// The changes applying `members` would make, without making them.
    pub fn diff_members(&self, members: &[Member]) -> Result<MemberDiff, StateError> {
        let conn = self.conn();
        let known = load_states(&conn).map_err(|e| self.err(e))?;
        Ok(diff(&known, members))
    }

    /// Applies a sync result in one transaction: upserts members, marks the missing as
    /// removed, writes an event per change, and records the run.
    pub fn apply_members(
        &self,
        members: &[Member],
        run: &SyncRun,
    ) -> Result<(SyncChanges, i64), StateError> {
        self.apply_result(members, run, Missing::Remove)
    }

    /// Applies a held sync result except its removals by absence: members, disables, re-enables
    /// and admin changes are applied and recorded like [`State::apply_members`] does, while users
    /// missing from the result keep their state until the result is confirmed.
    pub fn apply_members_keeping_missing(
        &self,
        members: &[Member],
        run: &SyncRun,
    ) -> Result<(SyncChanges, i64), StateError> {
        self.apply_result(members, run, Missing::Keep)
    }

    fn apply_result(
        &self,
        members: &[Member],
        run: &SyncRun,
        missing: Missing,
    ) -> Result<(SyncChanges, i64), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let known = load_states(&tx).map_err(|e| self.err(e))?;
        let MemberDiff { mut changes, .. } = diff(&known, members);
        if missing == Missing::Keep {
            changes.removed.clear();
        }
        let at = now();
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO users (name, uid, cn, mail, state, admin_sources, first_seen, last_seen, changed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)
                     ON CONFLICT(name) DO UPDATE SET uid = ?2, cn = ?3, mail = ?4, state = ?5,
                        admin_sources = ?6, last_seen = ?7,
                        changed_at = CASE WHEN users.state = ?5 AND users.admin_sources = ?6
                                          THEN users.changed_at ELSE ?7 END",
                )
                .map_err(|e| self.err(e))?;
            for member in members {
                let state = if member.disabled {
                    UserState::Disabled
                } else {
                    UserState::Active
                };
                upsert
                    .execute(params![
                        member.name,
                        member.uid,
                        member.cn,
                        member.mail,
                        state.as_str(),
                        member.admin_sources.join(","),
                        at
                    ])
                    .map_err(|e| self.err(e))?;
            }
            let mut remove = tx
                .prepare_cached("UPDATE users SET state = 'removed', admin_sources = '', changed_at = ?2 WHERE name = ?1")
                .map_err(|e| self.err(e))?;
            for name in &changes.removed {
                remove.execute(params![name, at]).map_err(|e| self.err(e))?;
            }
        }
        let mut events: Vec<(&str, &String)> = Vec::new();
        for (action, names) in [
            ("user.added", &changes.added),
            ("user.removed", &changes.removed),
            ("user.disabled", &changes.disabled),
            ("user.reenabled", &changes.reenabled),
            ("user.admin_changed", &changes.admin_changed),
        ] {
            events.extend(names.iter().map(|name| (action, name)));
        }
        if events.len() <= MAX_USER_EVENTS {
            let mut insert = tx
                .prepare_cached("INSERT INTO events (at, actor, action, details) VALUES (?1, 'directory-sync', ?2, ?3)")
                .map_err(|e| self.err(e))?;
            for (action, name) in events {
                let details = serde_json::json!({ "user": name }).to_string();
                insert
                    .execute(params![at, action, details])
                    .map_err(|e| self.err(e))?;
            }
        } else {
            let first = |names: &Vec<String>| names.iter().take(100).cloned().collect::<Vec<_>>();
            let details = serde_json::json!({
                "added": changes.added.len(), "removed": changes.removed.len(),
                "disabled": changes.disabled.len(), "reenabled": changes.reenabled.len(),
                "admin_changed": changes.admin_changed.len(),
                "first_added": first(&changes.added), "first_removed": first(&changes.removed),
            });
            tx.execute(
                "INSERT INTO events (at, actor, action, details) VALUES (?1, 'directory-sync', 'users.bulk_change', ?2)",
                params![at, details.to_string()],
            )
            .map_err(|e| self.err(e))?;
        }
        let run_id = insert_run(&tx, run, &changes).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((changes, run_id))
    }

    /// Records a run that changed nothing (unchanged, failed or held).
    pub fn record_sync_run(&self, run: &SyncRun) -> Result<i64, StateError> {
        let conn = self.conn();
        insert_run(&conn, run, &SyncChanges::default()).map_err(|e| self.err(e))
    }

    pub fn sync_runs(&self, limit: u32) -> Result<Vec<SyncRun>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, started_at, duration_ms, trigger, outcome, members, added, removed, disabled, reenabled, error
                 FROM sync_runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![limit], |row| {
                Ok(SyncRun {
                    id: row.get(0)?,
                    started_at: row.get(1)?,
                    duration_ms: row.get(2)?,
                    trigger: row.get(3)?,
                    outcome: row.get(4)?,
                    members: row.get(5)?,
                    added: row.get(6)?,
                    removed: row.get(7)?,
                    disabled: row.get(8)?,
                    reenabled: row.get(9)?,
                    error: row.get(10)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Users by name, optionally of one state, after `after` (paging by name).
    pub fn users(
        &self,
        state: Option<UserState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT users.name, uid, cn, mail, state, admin_sources, first_seen, last_seen, changed_at,
                        hub_admin.hub_grant, hub_admin.seen
                 FROM users LEFT JOIN hub_admin ON hub_admin.name = users.name
                 WHERE (?1 IS NULL OR state = ?1) AND users.name > ?2 ORDER BY users.name LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![state.map(UserState::as_str), after.unwrap_or(""), limit],
                user_row,
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StateError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT users.name, uid, cn, mail, state, admin_sources, first_seen, last_seen, changed_at,
                    hub_admin.hub_grant, hub_admin.seen
             FROM users LEFT JOIN hub_admin ON hub_admin.name = users.name WHERE users.name = ?1",
            params![name],
            user_row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub fn count_users(&self, state: UserState) -> Result<i64, StateError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT count(*) FROM users WHERE state = ?1",
            params![state.as_str()],
            |row| row.get(0),
        )
        .map_err(|e| self.err(e))
    }

    pub fn api_admins(&self) -> Result<BTreeSet<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name FROM api_admins")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Grants or revokes an API admin right, updates the user's sources, and records the event.
    /// Returns false when nothing changed.
    pub fn set_api_admin(&self, name: &str, admin: bool, actor: &str) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let at = now();
        let changed = if admin {
            tx.execute(
                "INSERT OR IGNORE INTO api_admins (name, granted_by, granted_at) VALUES (?1, ?2, ?3)",
                params![name, actor, at],
            )
        } else {
            tx.execute("DELETE FROM api_admins WHERE name = ?1", params![name])
        }
        .map_err(|e| self.err(e))?
            > 0;
        if changed {
            let sources: Option<String> = tx
                .query_row(
                    "SELECT admin_sources FROM users WHERE name = ?1 AND state = 'active'",
                    params![name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(sources) = sources {
                let mut set: BTreeSet<String> = sources
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if admin {
                    set.insert("api".into());
                } else {
                    set.remove("api");
                }
                let joined = set.into_iter().collect::<Vec<_>>().join(",");
                tx.execute(
                    "UPDATE users SET admin_sources = ?2, changed_at = ?3 WHERE name = ?1",
                    params![name, joined, at],
                )
                .map_err(|e| self.err(e))?;
            }
            let action = if admin {
                "admin.granted"
            } else {
                "admin.revoked"
            };
            tx.execute(
                "INSERT INTO events (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
                params![
                    at,
                    actor,
                    action,
                    serde_json::json!({ "user": name }).to_string()
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(changed)
    }
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let state: String = row.get(4)?;
    let sources: String = row.get(5)?;
    Ok(UserRecord {
        name: row.get(0)?,
        uid: row.get(1)?,
        cn: row.get(2)?,
        mail: row.get(3)?,
        state: UserState::parse(&state).unwrap_or(UserState::Removed),
        admin_sources: sources
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        first_seen: row.get(6)?,
        last_seen: row.get(7)?,
        changed_at: row.get(8)?,
        hub_grant: row.get::<_, Option<bool>>(9)?,
        hub_admin_seen: row.get::<_, Option<bool>>(10)?,
    })
}

fn load_states(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<BTreeMap<String, (UserState, String)>> {
    let mut stmt = conn.prepare_cached("SELECT name, state, admin_sources FROM users")?;
    let rows = stmt.query_map([], |row| {
        let state: String = row.get(1)?;
        Ok((
            row.get::<_, String>(0)?,
            (
                UserState::parse(&state).unwrap_or(UserState::Removed),
                row.get::<_, String>(2)?,
            ),
        ))
    })?;
    rows.collect()
}

/// What becomes of users missing from a sync result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Remove,
    Keep,
}

/// What a sync result would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDiff {
    pub changes: SyncChanges,
    /// Active users before the change.
    pub active_before: i64,
    /// Active users missing from the result: who would lose access by their absence (users
    /// already disabled lose nothing, though `changes.removed` lists them too).
    pub active_missing: usize,
}

fn diff(known: &BTreeMap<String, (UserState, String)>, members: &[Member]) -> MemberDiff {
    let mut changes = SyncChanges::default();
    let previously_active = known
        .values()
        .filter(|(s, _)| *s == UserState::Active)
        .count() as i64;
    let mut present = BTreeSet::new();
    for member in members {
        present.insert(member.name.as_str());
        let sources = member.admin_sources.join(",");
        match (known.get(&member.name), member.disabled) {
            (None, false) => changes.added.push(member.name.clone()),
            (None, true) => changes.disabled.push(member.name.clone()),
            (Some((UserState::Active, old)), false) if *old != sources => {
                changes.admin_changed.push(member.name.clone())
            }
            (Some((UserState::Active, _)), false) => {}
            (Some((UserState::Active, _)), true) => changes.disabled.push(member.name.clone()),
            (Some((UserState::Disabled, _)), true) => {}
            (Some((UserState::Removed, _)), true) => changes.disabled.push(member.name.clone()),
            (Some((UserState::Disabled | UserState::Removed, _)), false) => {
                changes.reenabled.push(member.name.clone())
            }
        }
    }
    let mut active_missing = 0;
    for (name, (state, _)) in known {
        if *state != UserState::Removed && !present.contains(name.as_str()) {
            changes.removed.push(name.clone());
            active_missing += usize::from(*state == UserState::Active);
        }
    }
    MemberDiff {
        changes,
        active_before: previously_active,
        active_missing,
    }
}

fn insert_run(
    conn: &rusqlite::Connection,
    run: &SyncRun,
    changes: &SyncChanges,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO sync_runs (started_at, duration_ms, trigger, outcome, members, added, removed, disabled, reenabled, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            run.started_at,
            run.duration_ms,
            run.trigger,
            run.outcome,
            run.members,
            changes.added.len() as i64,
            changes.removed.len() as i64,
            changes.disabled.len() as i64,
            changes.reenabled.len() as i64,
            run.error
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, disabled: bool) -> Member {
        Member {
            name: name.into(),
            uid: name.into(),
            cn: name.into(),
            mail: String::new(),
            disabled,
            admin_sources: vec![],
        }
    }

    #[test]
    fn only_active_users_missing_from_a_result_lose_access() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let run = SyncRun::applied_now("test");
        state
            .apply_members(&[member("active", false), member("locked", true)], &run)
            .unwrap();
        let diff = state.diff_members(&[]).unwrap();
        assert_eq!(diff.changes.removed, ["active", "locked"]);
        assert_eq!(diff.active_before, 1);
        assert_eq!(
            diff.active_missing, 1,
            "the disabled user had no access to lose"
        );
    }

    #[test]
    fn a_held_result_applies_everything_but_the_removals() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let run = SyncRun::applied_now("test");
        let mut admin = member("admin", false);
        admin.admin_sources = vec!["group".into()];
        state
            .apply_members(&[admin, member("kept", false), member("gone", false)], &run)
            .unwrap();
        // The held result: admin disabled, a newcomer, and "gone" (and "kept") missing.
        let result = [member("admin", true), member("new", false)];
        let (changes, _) = state.apply_members_keeping_missing(&result, &run).unwrap();
        assert_eq!(changes.disabled, ["admin"]);
        assert_eq!(changes.added, ["new"]);
        assert!(changes.removed.is_empty(), "{changes:?}");
        let state_of = |name: &str| state.user(name).unwrap().unwrap().state;
        assert_eq!(state_of("admin"), UserState::Disabled);
        assert!(
            state
                .user("admin")
                .unwrap()
                .unwrap()
                .admin_sources
                .is_empty()
        );
        assert_eq!(state_of("new"), UserState::Active);
        assert_eq!(state_of("kept"), UserState::Active, "a removal waits");
        assert_eq!(state_of("gone"), UserState::Active, "a removal waits");
        // Confirmed: the removals are made.
        let (changes, _) = state.apply_members(&result, &run).unwrap();
        assert_eq!(changes.removed, ["gone", "kept"]);
        assert_eq!(state_of("gone"), UserState::Removed);
    }
}
