//! Versioned schema migrations. `PRAGMA user_version` holds the number applied; each
//! migration is one small step, run in its own transaction, in order.

use std::path::Path;

use rusqlite::Connection;

use super::StateError;

const MIGRATIONS: &[&str] = &[
    // 1: the foundation tables.
    "CREATE TABLE config_revisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        overlay TEXT NOT NULL,
        effective TEXT NOT NULL
    );
    CREATE TABLE boot_steps (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        progress REAL NOT NULL,
        attempts INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE TABLE locked_keys (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        locked_at TEXT NOT NULL
    );",
    // 2: the directory sync.
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        uid TEXT NOT NULL,
        cn TEXT NOT NULL,
        mail TEXT NOT NULL,
        state TEXT NOT NULL,
        admin_sources TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        changed_at TEXT NOT NULL
    );
    CREATE INDEX users_state ON users (state, name);
    CREATE TABLE api_admins (
        name TEXT PRIMARY KEY,
        granted_by TEXT NOT NULL,
        granted_at TEXT NOT NULL
    );
    CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        outcome TEXT NOT NULL,
        members INTEGER NOT NULL,
        added INTEGER NOT NULL,
        removed INTEGER NOT NULL,
        disabled INTEGER NOT NULL,
        reenabled INTEGER NOT NULL,
        error TEXT
    );",
    // 3: the platform's generated secrets (proxy token, cookie secret, service tokens), made
    // once and kept: regenerating one would log every user out or break a service.
    "CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
    // 4: hub changes begun and not yet recorded as events (an intent is written before the
    // change and replaced by its event after it, in one transaction), so a kill -9 between the
    // two is settled by the next run instead of leaving a change with no event.
    "CREATE TABLE hub_intents (
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL,
        started_at TEXT NOT NULL,
        PRIMARY KEY (user, action)
    );",
    // 5: hub admin flags: the one pangeod last left at the hub (`seen`), so that a change made
    // in the hub's own admin page is noticed, and such a change (`hub_grant`: 1 granted there,
    // 0 revoked there), kept while the user is a member.
    "CREATE TABLE hub_admin (
        name TEXT PRIMARY KEY,
        seen INTEGER,
        hub_grant INTEGER,
        granted_at TEXT
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Refuses a database written by a newer pangeod; returns the version found.
pub(super) fn check_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| super::classify(path, source))?;
    if found > SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let sqlite = |source| super::classify(path, source);
    let found = check_version(conn, path)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(version, path = %path.display(), "state database migrated");
    }
    Ok(())
}
