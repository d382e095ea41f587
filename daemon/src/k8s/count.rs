//! Counts the requests pangeod makes of the Kubernetes API, by caller: the admin API route whose
//! handler made them (set with [`as_caller`] around each API request), or `background` for the
//! loops, watches and reflectors. Shown in `/metrics` as `pangeod_kubernetes_requests_total`, so
//! a claim such as "a status request makes no Kubernetes request" can be checked from outside.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// The caller of requests made outside any API request.
pub const BACKGROUND: &str = "background";

static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

tokio::task_local! {
    static CALLER: String;
}

/// Runs `future` with its Kubernetes requests counted under `caller`. Requests of tasks it
/// spawns count as `background`.
pub async fn as_caller<F: Future>(caller: String, future: F) -> F::Output {
    CALLER.scope(caller, future).await
}

/// The requests made so far, by caller.
pub fn request_counts() -> BTreeMap<String, u64> {
    COUNTS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn count() {
    let caller = CALLER
        .try_with(Clone::clone)
        .unwrap_or_else(|_| BACKGROUND.to_string());
    *COUNTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(caller)
        .or_default() += 1;
}

/// The layer in the client's stack.
#[derive(Clone, Copy, Default)]
pub struct CountLayer;

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner)
    }
}

#[derive(Clone)]
pub struct Counted<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    /// Called in the task that awaits the request, so the caller is the one that asked.
    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        count();
        self.0.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn requests_count_under_the_caller_that_made_them() {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(())
        });
        let mut service = tower::Layer::layer(&CountLayer, inner);
        let before = request_counts();
        let get = |c: &BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
        as_caller("GET /v1/test-route".into(), async {
            for _ in 0..3 {
                let svc = service.ready().await.expect("ready");
                svc.call(http::Request::new(())).await.expect("served");
            }
        })
        .await;
        service.ready().await.expect("ready");
        service.call(http::Request::new(())).await.expect("served");
        let after = request_counts();
        assert_eq!(
            get(&after, "GET /v1/test-route") - get(&before, "GET /v1/test-route"),
            3
        );
        assert!(get(&after, BACKGROUND) > get(&before, BACKGROUND));
    }
}
