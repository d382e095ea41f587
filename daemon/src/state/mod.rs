//! The state database: the only module that talks to SQLite.
//!
//! WAL mode with `synchronous=FULL`, so a write that returned is on disk: an acknowledged
//! change survives `kill -9` and a power cut. A lock file keeps a second pangeod away.

mod intents;
mod migrations;
mod users;

pub use intents::{Change, Intent};
pub use users::{Member, MemberDiff, SyncChanges, SyncRun, UserRecord, UserState};

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::LockedValue;

pub use migrations::SCHEMA_VERSION;

/// The database file inside the state directory.
pub const DB_FILE: &str = "state.db";
const LOCK_FILE: &str = "pangeod.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot create state directory {path}: {source}; check daemon.state_dir and that the data disk is mounted"
    )]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}; check the permissions of daemon.state_dir")]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another pangeod{} is already using the state in {dir}; stop it first (systemctl stop pangeod), or give this one its own daemon.state_dir", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error(
        "state database {path} has schema version {found}, newer than the {supported} this pangeod understands: it was written by a newer pangeod. Run that version again, or restore a backup; the file was left untouched"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the disk holding the state database {path} is full, so nothing was changed; free space on it (df -h {}) and try again",
        path.parent().unwrap_or(path).display()
    )]
    DiskFull { path: PathBuf },
    #[error(
        "state database {path} is damaged ({source}); stop pangeod and restore it from a backup"
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the config changed while this change was made (revision {found:?} is now the latest, this change was built on {expected:?}); nothing of it was stored"
    )]
    RevisionConflict {
        expected: Option<i64>,
        found: Option<i64>,
    },
    #[error("the system's random source failed while generating the secret {what}")]
    Random { what: String },
    #[error("state database: the blocking task ended without an answer: {0}")]
    Task(String),
    #[error("state database: cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// One entry of the event log: who did what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// A stored configuration revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigRevision {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    /// Keys set through the admin API, applied on top of the files.
    pub overlay: serde_json::Value,
    /// The validated configuration that was in force.
    pub effective: serde_json::Value,
}

/// The persisted state of one boot step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub state: String,
    pub message: String,
    pub progress: f64,
    pub attempts: i64,
    pub updated_at: String,
}

pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held for the daemon's lifetime; the OS releases it when the process dies, even by kill -9.
    _lock: File,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Takes group and other permissions away from `path` (never adds any).
fn restrict_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let wanted = current & mode;
    if wanted != current {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Free space under which the state database's disk counts as full.
pub const LOW_SPACE: u64 = 8 << 20;

/// Bytes free for unprivileged users on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// A SQLite error as the admin needs to read it: a full disk, a damaged file, or the rest.
/// SQLite reports a full disk as SQLITE_FULL, or as an I/O error when the write-ahead log
/// cannot grow; the latter counts as a full disk when the disk is in fact (nearly) full.
pub(crate) fn classify(path: &Path, source: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode;
    let code = source.sqlite_error_code();
    let dir = path.parent().unwrap_or(path);
    match code {
        Some(ErrorCode::DiskFull) => StateError::DiskFull {
            path: path.to_path_buf(),
        },
        Some(ErrorCode::SystemIoFailure) if free_bytes(dir).is_some_and(|f| f < LOW_SPACE) => {
            StateError::DiskFull {
                path: path.to_path_buf(),
            }
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        },
        _ => StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Creates `path` with mode 0600 if it is missing, and makes an existing one 0600, along with
/// SQLite's WAL and shared-memory files beside it.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The async code's way in: every call runs on tokio's blocking pool, so a slow disk (each write
/// is fsynced) or a long transaction (a sync of 20,000 members) never holds an async worker. The
/// calls still go one at a time through the connection's mutex, in the order they were made by
/// one task.
pub trait StateCall {
    fn call<T, F>(&self, f: F) -> impl std::future::Future<Output = Result<T, StateError>> + Send
    where
        F: FnOnce(&State) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static;
}

impl StateCall for std::sync::Arc<State> {
    async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        F: FnOnce(&State) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| StateError::Task(e.to_string()))?
    }
}

impl State {
    /// Takes the lock, opens the database and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = acquire_lock(dir)?;
        let path = dir.join(DB_FILE);
        let sqlite = |source| classify(&path, source);
        // The database holds the generated secrets (cookie secret, service tokens, the ingress
        // CA's key): 0600 whatever the umask. SQLite gives its WAL and shared-memory files the
        // database file's mode.
        restrict_mode(dir, 0o700).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        create_private(&path).map_err(|source| StateError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        // Refuse a newer schema before anything (even the journal mode) touches the file.
        migrations::check_version(&conn, &path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        migrations::migrate(&mut conn, &path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            _lock: lock,
        })
    }

    /// The state directory (where `state.db` lives).
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is one
        // statement or transaction), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        classify(&self.path, source)
    }

    /// Why the state database cannot take writes now, if it cannot: the disk holding it is
    /// full (less than [`LOW_SPACE`] free for the unprivileged, where SQLite needs room for
    /// its write-ahead log). Read by status, which reports pangeod degraded with it.
    pub fn disk_problem(&self) -> Option<String> {
        let dir = self.dir();
        let free = free_bytes(&dir)?;
        (free < LOW_SPACE).then(|| {
            format!(
                "the disk holding the state database ({}) is full ({} KiB free): config changes, syncs and events cannot be recorded; free space there (df -h {})",
                dir.display(),
                free / 1024,
                dir.display()
            )
        })
    }

    pub fn record_event(
        &self,
        actor: &str,
        action: &str,
        details: serde_json::Value,
    ) -> Result<i64, StateError> {
        let details = serde_json::to_string(&details).map_err(|source| StateError::Encode {
            what: "event details",
            source,
        })?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
            params![now(), actor, action, details],
        )
        .map_err(|e| self.err(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Several events of one actor, in one transaction.
    pub fn record_events(
        &self,
        actor: &str,
        events: &[(&str, serde_json::Value)],
    ) -> Result<(), StateError> {
        let at = now();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            for (action, details) in events {
                let details =
                    serde_json::to_string(details).map_err(|source| StateError::Encode {
                        what: "event details",
                        source,
                    })?;
                stmt.execute(params![at, actor, action, details])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Events newest first; `before` pages backwards through older ones.
    pub fn events(&self, before: Option<i64>, limit: u32) -> Result<Vec<Event>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, actor, action, details FROM events
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![before.unwrap_or(i64::MAX), limit], |row| {
                let details: String = row.get(4)?;
                Ok(Event {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Stores a revision and its event in one transaction, if the latest revision is still
    /// `expected` (the one the caller built this one on; `None`: there was none). Every writer
    /// of the config (the config step on boot and reload, PATCH) goes through this
    /// compare-and-set, so none can overwrite a revision it did not see.
    pub fn save_config_revision(
        &self,
        expected: Option<i64>,
        actor: &str,
        source: &str,
        overlay: &serde_json::Value,
        effective: &serde_json::Value,
        changes: &serde_json::Value,
    ) -> Result<i64, StateError> {
        let encode = |what, value: &serde_json::Value| {
            serde_json::to_string(value).map_err(|source| StateError::Encode { what, source })
        };
        let overlay_text = encode("config overlay", overlay)?;
        let effective_text = encode("config", effective)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(id) FROM config_revisions", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        if found != expected {
            return Err(StateError::RevisionConflict { expected, found });
        }
        let at = now();
        tx.execute(
            "INSERT INTO config_revisions (at, actor, source, overlay, effective) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at, actor, source, overlay_text, effective_text],
        )
        .map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        let details = serde_json::json!({ "revision": id, "source": source, "changes": changes });
        tx.execute(
            "INSERT INTO events (at, actor, action, details) VALUES (?1, ?2, 'config.revision', ?3)",
            params![at, actor, details.to_string()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    pub fn latest_config_revision(&self) -> Result<Option<ConfigRevision>, StateError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT id, at, actor, source, overlay, effective FROM config_revisions ORDER BY id DESC LIMIT 1",
            [],
            |row| {
                let overlay: String = row.get(4)?;
                let effective: String = row.get(5)?;
                Ok(ConfigRevision {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    source: row.get(3)?,
                    overlay: serde_json::from_str(&overlay).unwrap_or_default(),
                    effective: serde_json::from_str(&effective).unwrap_or_default(),
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub fn steps(&self) -> Result<Vec<StepRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, state, message, progress, attempts, updated_at FROM boot_steps",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok(StepRecord {
                    name: row.get(0)?,
                    state: row.get(1)?,
                    message: row.get(2)?,
                    progress: row.get(3)?,
                    attempts: row.get(4)?,
                    updated_at: row.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn save_step(&self, step: &StepRecord) -> Result<(), StateError> {
        self.conn()
            .execute(
                "INSERT INTO boot_steps (name, state, message, progress, attempts, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET state = ?2, message = ?3, progress = ?4,
                    attempts = ?5, updated_at = ?6",
                params![
                    step.name,
                    step.state,
                    step.message,
                    step.progress,
                    step.attempts,
                    step.updated_at
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn locked_keys(&self) -> Result<BTreeMap<String, LockedValue>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, value, locked_at FROM locked_keys")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    LockedValue {
                        value: row.get(1)?,
                        since: row.get(2)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The secret `name`, generated (32 random bytes, hex) and stored on first use. Never
    /// regenerated: an existing row always wins, even against a concurrent first use.
    pub fn secret(&self, name: &str) -> Result<String, StateError> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(
            |_| StateError::Random {
                what: name.to_string(),
            },
        )?;
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3)",
            params![name, fresh, now()],
        )
        .map_err(|e| self.err(e))?;
        conn.query_row(
            "SELECT value FROM secrets WHERE name = ?1",
            params![name],
            |row| row.get(0),
        )
        .map_err(|e| self.err(e))
    }

    /// A generated value kept under `name`: made by `make` the first time, the stored one ever
    /// after (like [`State::secret`], for values that are not random bytes: certificates).
    pub fn secret_with<E>(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<String, E>,
    ) -> Result<Result<String, E>, StateError> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(value) = existing {
            return Ok(Ok(value));
        }
        let value = match make() {
            Ok(value) => value,
            Err(error) => return Ok(Err(error)),
        };
        conn.execute(
            "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3)",
            params![name, value, now()],
        )
        .map_err(|e| self.err(e))?;
        Ok(Ok(value))
    }

    /// A kept value, if one was made.
    pub fn stored_secret(&self, name: &str) -> Result<Option<String>, StateError> {
        self.conn()
            .query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Locks keys that are not locked yet; an existing lock is never overwritten.
    pub fn lock_keys(&self, values: &[(String, String)]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let at = now();
        for (key, value) in values {
            tx.execute(
                "INSERT OR IGNORE INTO locked_keys (key, value, locked_at) VALUES (?1, ?2, ?3)",
                params![key, value, at],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

/// Takes an exclusive lock on `pangeod.lock` and writes our PID into it.
fn acquire_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StateError::LockFile { path, source });
        }
    }
    let write_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()
    };
    write_pid(&mut file).map_err(|source| StateError::LockFile { path, source })?;
    Ok(file)
}

#[cfg(test)]
mod tests;
