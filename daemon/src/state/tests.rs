use super::*;

#[test]
fn second_open_of_the_same_state_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = State::open(dir.path()).unwrap();
    let Err(error) = State::open(dir.path()) else {
        panic!("a second open must fail");
    };
    assert_eq!(
        error.to_string(),
        format!(
            "another pangeod (pid {}) is already using the state in {}; stop it first (systemctl stop pangeod), or give this one its own daemon.state_dir",
            std::process::id(),
            dir.path().display()
        )
    );
}

#[test]
fn lock_is_released_when_the_state_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    drop(State::open(dir.path()).unwrap());
    assert!(State::open(dir.path()).is_ok());
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let Err(error) = State::open(dir.path()) else {
        panic!("a newer schema must be refused");
    };
    assert_eq!(
        error.to_string(),
        format!(
            "state database {} has schema version 99, newer than the {SCHEMA_VERSION} this pangeod understands: it was written by a newer pangeod. Run that version again, or restore a backup; the file was left untouched",
            db.display()
        )
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn migrations_are_recorded_and_rerun_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    drop(State::open(dir.path()).unwrap());
    let state = State::open(dir.path()).unwrap();
    let version: i64 = state
        .conn()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = state
        .conn()
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = state
        .conn()
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL");
}

#[test]
fn events_page_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    for i in 0..5 {
        state
            .record_event("tester", "test.event", serde_json::json!({ "i": i }))
            .unwrap();
    }
    let first = state.events(None, 2).unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| e.details["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 3]
    );
    let next = state.events(Some(first[1].id), 10).unwrap();
    assert_eq!(
        next.iter()
            .map(|e| e.details["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1, 0]
    );
    assert_eq!(next[0].actor, "tester");
}

#[test]
fn locked_keys_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    state
        .lock_keys(&[("cluster.name".into(), "a".into())])
        .unwrap();
    state
        .lock_keys(&[
            ("cluster.name".into(), "b".into()),
            ("cluster.external_ip".into(), "192.0.2.1".into()),
        ])
        .unwrap();
    let locked = state.locked_keys().unwrap();
    assert_eq!(locked["cluster.name"].value, "a");
    assert_eq!(locked["cluster.external_ip"].value, "192.0.2.1");
}

#[test]
fn config_revisions_and_steps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    assert!(state.latest_config_revision().unwrap().is_none());
    let overlay = serde_json::json!({ "notebook": { "cpus": 2 } });
    let id = state
        .save_config_revision(
            None,
            "uid 0",
            "admin API",
            &overlay,
            &serde_json::json!({ "x": 1 }),
            &overlay,
        )
        .unwrap();
    let latest = state.latest_config_revision().unwrap().unwrap();
    assert_eq!(
        (latest.id, &latest.overlay, latest.actor.as_str()),
        (id, &overlay, "uid 0")
    );
    assert_eq!(state.events(None, 1).unwrap()[0].action, "config.revision");
    // Compare-and-set: a writer that built on an older revision (or on none) is refused, and
    // nothing of it is stored.
    for stale in [None, Some(id - 1)] {
        match state.save_config_revision(stale, "uid 0", "files", &overlay, &overlay, &overlay) {
            Err(crate::state::StateError::RevisionConflict { expected, found }) => {
                assert_eq!((expected, found), (stale, Some(id)))
            }
            other => panic!("a stale writer was not refused: {other:?}"),
        }
    }
    assert_eq!(state.latest_config_revision().unwrap().unwrap().id, id);
    let next = state
        .save_config_revision(Some(id), "uid 0", "files", &overlay, &overlay, &overlay)
        .unwrap();
    assert_eq!(next, id + 1);

    let mut step = StepRecord {
        name: "config".into(),
        state: "running".into(),
        message: String::new(),
        progress: 0.5,
        attempts: 1,
        updated_at: now(),
    };
    state.save_step(&step).unwrap();
    step.state = "done".into();
    state.save_step(&step).unwrap();
    assert_eq!(state.steps().unwrap(), vec![step]);
}

#[test]
fn a_secret_is_generated_once_and_kept_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let state = State::open(dir.path()).unwrap();
        let a = state.secret("proxy-token").unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(state.secret("proxy-token").unwrap(), a);
        assert_ne!(state.secret("cookie-secret").unwrap(), a);
        a
    };
    let state = State::open(dir.path()).unwrap();
    assert_eq!(state.secret("proxy-token").unwrap(), first);
}
