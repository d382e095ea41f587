//! Intents: a change at the hub is written down before it is made and replaced by its event,
//! in one transaction, after it is made. A process killed in between leaves the intent, and
//! the next run settles it against the hub, so the event log matches the hub one for one.

use rusqlite::params;

use super::{State, StateError, now};

/// A change begun and not yet recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub user: String,
    /// The event's action once done (`hub.user-deleted`).
    pub action: String,
    /// The event's details as known when the change began.
    pub details: serde_json::Value,
    pub started_at: String,
}

/// One change: the user, the event's action, the event's details.
pub type Change = (String, &'static str, serde_json::Value);

impl State {
    /// Writes down, in one transaction, that these changes are about to be made (replacing
    /// older intents of the same user and action).
    pub fn begin_intents(&self, changes: &[Change]) -> Result<(), StateError> {
        let at = now();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO hub_intents (user, action, details, started_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            for (user, action, details) in changes {
                insert
                    .execute(params![user, action, encode(details)?, at])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The changes are made: their events replace their intents, in one transaction.
    pub fn complete_intents(&self, actor: &str, changes: &[Change]) -> Result<(), StateError> {
        let at = now();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut event = tx
                .prepare_cached(
                    "INSERT INTO events (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            let mut done = tx
                .prepare_cached("DELETE FROM hub_intents WHERE user = ?1 AND action = ?2")
                .map_err(|e| self.err(e))?;
            // The admin flag the change left at the hub, in the same transaction: a later run
            // tells pangeod's own changes from those made in the hub's admin page by it.
            let mut seen = tx
                .prepare_cached(
                    "INSERT INTO hub_admin (name, seen) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET seen = ?2",
                )
                .map_err(|e| self.err(e))?;
            for (user, action, details) in changes {
                event
                    .execute(params![at, actor, action, encode(details)?])
                    .map_err(|e| self.err(e))?;
                done.execute(params![user, action])
                    .map_err(|e| self.err(e))?;
                let admin = details.get("admin").and_then(serde_json::Value::as_bool);
                match *action {
                    "hub.user-created" | "hub.admin-set" => {
                        seen.execute(params![user, admin])
                            .map_err(|e| self.err(e))?;
                    }
                    "hub.user-deleted" => {
                        seen.execute(params![user, None::<bool>])
                            .map_err(|e| self.err(e))?;
                    }
                    _ => {}
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// What a hub sync run found of admin flags, in one transaction: `noticed`, flags changed in
    /// the hub's admin page (kept as grants or revocations, with an event each); `seen`, flags
    /// pangeod found at the hub as it expects them; `ended`, the grants of users who are no
    /// longer members (with an event each).
    pub fn note_hub_admin(
        &self,
        noticed: &[(String, bool)],
        seen: &[(String, bool)],
        ended: &[String],
    ) -> Result<(), StateError> {
        if noticed.is_empty() && seen.is_empty() && ended.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut event = tx
                .prepare_cached(
                    "INSERT INTO events (at, actor, action, details) VALUES (?1, 'hub-sync', ?2, ?3)",
                )
                .map_err(|e| self.err(e))?;
            let mut grant = tx
                .prepare_cached(
                    "INSERT INTO hub_admin (name, seen, hub_grant, granted_at) VALUES (?1, ?2, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET seen = ?2, hub_grant = ?2, granted_at = ?3",
                )
                .map_err(|e| self.err(e))?;
            for (user, admin) in noticed {
                grant
                    .execute(params![user, admin, at])
                    .map_err(|e| self.err(e))?;
                let (action, made) = if *admin {
                    ("admin.hub-granted", "granted in the hub's admin page")
                } else {
                    ("admin.hub-revoked", "revoked in the hub's admin page")
                };
                let details = serde_json::json!({ "user": user, "admin": admin, "how": made, "kept": "while the user is a member" });
                event
                    .execute(params![at, action, encode(&details)?])
                    .map_err(|e| self.err(e))?;
            }
            let mut found = tx
                .prepare_cached(
                    "INSERT INTO hub_admin (name, seen) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET seen = ?2",
                )
                .map_err(|e| self.err(e))?;
            for (user, admin) in seen {
                found
                    .execute(params![user, admin])
                    .map_err(|e| self.err(e))?;
            }
            let mut end = tx
                .prepare_cached(
                    "UPDATE hub_admin SET hub_grant = NULL, granted_at = NULL WHERE name = ?1",
                )
                .map_err(|e| self.err(e))?;
            for user in ended {
                end.execute(params![user]).map_err(|e| self.err(e))?;
                let details = serde_json::json!({ "user": user, "because": "no longer a member" });
                event
                    .execute(params![at, "admin.hub-grant-ended", encode(&details)?])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// These changes were not made: their intents go, with no event.
    pub fn drop_intents(&self, changes: &[(String, String)]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM hub_intents WHERE user = ?1 AND action = ?2")
                .map_err(|e| self.err(e))?;
            for (user, action) in changes {
                delete
                    .execute(params![user, action])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every open intent, oldest first.
    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT user, action, details, started_at FROM hub_intents ORDER BY started_at, user",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                let details: String = row.get(2)?;
                Ok(Intent {
                    user: row.get(0)?,
                    action: row.get(1)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    started_at: row.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

fn encode(details: &serde_json::Value) -> Result<String, StateError> {
    serde_json::to_string(details).map_err(|source| StateError::Encode {
        what: "intent details",
        source,
    })
}
