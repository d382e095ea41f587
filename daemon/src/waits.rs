//! What an admin API request is waiting on, so that a request cut by the API's deadline can
//! name the system that stalled ("the FreeIPA server ldaps://ipa.example:636: bind"), not only
//! say that it timed out.
//!
//! The API's deadline middleware gives each request a slot (a task-local, so it follows the
//! request's own future and nothing else); the code that calls out to another system notes
//! what it is about to wait on. Outside a request, noting does nothing.

use std::sync::{Arc, Mutex};

tokio::task_local! {
    static WAITING_ON: Arc<Mutex<Option<String>>>;
}

/// Notes that the current API request now waits on `what` (built only inside a request).
pub fn note(what: impl FnOnce() -> String) {
    let _ = WAITING_ON.try_with(|slot| {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(what());
    });
}

/// Runs `future` with a fresh slot; returns its output, or on a timeout what it waited on.
pub async fn within<F: std::future::Future>(
    limit: std::time::Duration,
    future: F,
) -> Result<F::Output, Option<String>> {
    let slot = Arc::new(Mutex::new(None));
    match tokio::time::timeout(limit, WAITING_ON.scope(slot.clone(), future)).await {
        Ok(output) => Ok(output),
        Err(_) => Err(slot.lock().unwrap_or_else(|p| p.into_inner()).take()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_timed_out_future_reports_what_it_noted_last() {
        let outcome = within(Duration::from_millis(50), async {
            note(|| "the hub".into());
            note(|| "the FreeIPA server: bind".into());
            std::future::pending::<()>().await
        })
        .await;
        assert_eq!(outcome, Err(Some("the FreeIPA server: bind".into())));
        let fine = within(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(fine, Ok(7));
        // Outside a request, noting is a no-op.
        note(|| unreachable!("not built outside a request"));
    }
}
