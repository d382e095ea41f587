//! The one driver of pangeod's long-running loops (the boot runner, the directory sync, the hub
//! sync): when to run, beats for the watchdog, backoff after a failure, and cancellation.
//!
//! A loop is a [`Job`]: what wakes it besides its timer ([`Job::wake`]), and one run
//! ([`Job::run`]), which says when it wants to run again ([`Outcome`]). The driver beats the
//! loop's heartbeat every second while it waits and while a run is in progress, as long as the
//! task is being polled: a run that blocks its thread stops the beats, and the watchdog notices.
//! A failed run is retried after an exponential backoff with jitter (`backon`), reset by the next
//! run that succeeds. Cancelling the token stops the loop at once, also in the middle of a run:
//! every run is idempotent and persists what it did, so the next start resumes.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::systemd::Heartbeats;

/// How often a loop beats while it waits or runs.
pub const BEAT: Duration = Duration::from_secs(1);

/// Why a run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why<W> {
    /// The loop's timer: the first run, a period, or a retry.
    Timer,
    /// The job's own wake-up (a reload, a kick, a change).
    Wake(W),
}

/// What a run asks of the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: run again after this long, or only when woken (`None`). Resets the backoff.
    Done(Option<Duration>),
    /// Failed: run again after the next backoff delay. The error is logged with the delay;
    /// `None` when the job logged it itself (or there is nothing to say, such as a hub that is
    /// not installed yet).
    Retry(Option<String>),
}

/// A loop's work.
pub trait Job {
    type Wake: Send;
    /// Waits for the next reason to run other than the timer; `None` ends the loop (its source
    /// is gone). Dropped and called again after every run, so it must not lose a wake-up when
    /// dropped before it returns.
    fn wake(&mut self) -> impl Future<Output = Option<Self::Wake>> + Send;
    /// One run.
    fn run(&mut self, why: Why<Self::Wake>) -> impl Future<Output = Outcome> + Send;
}

/// How a loop is driven.
#[derive(Clone)]
pub struct Driver {
    /// The name the watchdog knows it by.
    name: &'static str,
    heartbeats: Heartbeats,
    cancel: CancellationToken,
    /// The delay before the first run.
    first: Duration,
    /// The backoff after failed runs.
    backoff: ExponentialBuilder,
}

impl Driver {
    pub fn new(name: &'static str, heartbeats: Heartbeats, cancel: CancellationToken) -> Self {
        Self {
            name,
            heartbeats,
            cancel,
            first: Duration::ZERO,
            backoff: backoff(Duration::from_secs(2), Duration::from_secs(30)),
        }
    }

    pub fn first_run_after(mut self, first: Duration) -> Self {
        self.first = first;
        self
    }

    pub fn backoff(mut self, backoff: ExponentialBuilder) -> Self {
        self.backoff = backoff;
        self
    }

    /// Drives `job` until the token is cancelled or its wake source is gone.
    pub async fn drive<J: Job>(self, mut job: J) {
        let mut beat = tokio::time::interval(BEAT);
        let mut next = Some(Instant::now() + self.first);
        let mut delays = self.backoff.build();
        // No first delay: the first run starts in this very poll, not a timer tick later (the
        // boot runner marks its steps running before a status request can see the restored
        // ones).
        let mut at_once = self.first.is_zero();
        loop {
            self.heartbeats.beat(self.name);
            let why = if std::mem::take(&mut at_once) {
                Why::Timer
            } else {
                let wake = job.wake();
                tokio::pin!(wake);
                let timer = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(timer);
                loop {
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        _ = beat.tick() => self.beat(),
                        () = &mut timer => break Why::Timer,
                        woken = &mut wake => match woken {
                            Some(woken) => break Why::Wake(woken),
                            None => return,
                        },
                    }
                }
            };
            let outcome = {
                let run = job.run(why);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        outcome = &mut run => break outcome,
                        _ = beat.tick() => self.beat(),
                    }
                }
            };
            next = self.next_run(outcome, &mut delays);
        }
    }

    fn next_run(&self, outcome: Outcome, delays: &mut ExponentialBackoff) -> Option<Instant> {
        match outcome {
            Outcome::Done(after) => {
                *delays = self.backoff.build();
                after.map(|after| Instant::now() + after)
            }
            Outcome::Retry(error) => {
                // The builder never runs out (`without_max_times`); the cap is its max delay.
                let after = delays.next().unwrap_or(Duration::from_secs(30));
                if let Some(error) = error {
                    tracing::warn!(%error, retry_in = ?after, "{} failed; nothing is lost, it is retried", self.name);
                }
                Some(Instant::now() + after)
            }
        }
    }

    fn beat(&self) {
        #[cfg(feature = "fault-injection")]
        if HANG.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(self.name) {
            tracing::warn!(name = self.name, "fault injection: this loop stops beating");
            return;
        }
        self.heartbeats.beat(self.name);
    }
}

/// An exponential backoff from `min` to `max` with jitter, never giving up.
pub fn backoff(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Test builds only (`--features fault-injection`): the loop of this name stops beating, as a
/// hung loop would, so that tests can watch systemd's watchdog restart the daemon.
#[cfg(feature = "fault-injection")]
pub static HANG: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts runs; fails the first `failures` runs; woken by a channel.
    struct Counting {
        runs: Arc<AtomicUsize>,
        whys: Arc<std::sync::Mutex<Vec<Why<u32>>>>,
        failures: usize,
        wakes: tokio::sync::mpsc::Receiver<u32>,
        done_after: Option<Duration>,
    }

    impl Job for Counting {
        type Wake = u32;
        async fn wake(&mut self) -> Option<u32> {
            self.wakes.recv().await
        }
        async fn run(&mut self, why: Why<u32>) -> Outcome {
            self.whys.lock().expect("not poisoned").push(why);
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Outcome::Retry(Some(format!("failure {n}")))
            } else {
                Outcome::Done(self.done_after)
            }
        }
    }

    type Whys = Arc<std::sync::Mutex<Vec<Why<u32>>>>;

    fn job(
        failures: usize,
        done_after: Option<Duration>,
    ) -> (
        Counting,
        tokio::sync::mpsc::Sender<u32>,
        Arc<AtomicUsize>,
        Whys,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let runs = Arc::new(AtomicUsize::new(0));
        let whys = Whys::default();
        (
            Counting {
                runs: runs.clone(),
                whys: whys.clone(),
                failures,
                wakes: rx,
                done_after,
            },
            tx,
            runs,
            whys,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_a_success_resets_the_backoff() {
        let (job, _tx, runs, whys) = job(4, Some(Duration::from_secs(600)));
        let cancel = CancellationToken::new();
        let driver = Driver::new("test", Heartbeats::default(), cancel.clone())
            .backoff(backoff(Duration::from_secs(2), Duration::from_secs(10)));
        let task = tokio::spawn(driver.drive(job));
        // Runs at once, then after 2-4 s, 4-8 s, 8-16 s (jitter adds up to one delay), capped.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "no retry before the minimum delay"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            5,
            "four failures, then one success"
        );
        // After the success, the next run waits for its period, not a backoff.
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(*whys.lock().expect("not poisoned"), vec![Why::Timer; 5]);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("a cancelled loop ends")
            .expect("the loop does not panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_runs_at_once_and_says_why() {
        let (job, tx, runs, whys) = job(0, None);
        let cancel = CancellationToken::new();
        let driver = Driver::new("test", Heartbeats::default(), cancel.clone())
            .first_run_after(Duration::from_secs(3600));
        let task = tokio::spawn(driver.drive(job));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "the first run waits its delay"
        );
        tx.send(7).await.expect("the loop listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(*whys.lock().expect("not poisoned"), vec![Why::Wake(7)]);
        // Done(None): no timer; the next run only on a wake.
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A closed wake source ends the loop.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the loop ends when its wake source is gone")
            .expect("no panic");
        cancel.cancel();
    }

    /// A job whose run never ends: cancellation must still stop the loop.
    struct Stuck;
    impl Job for Stuck {
        type Wake = ();
        async fn wake(&mut self) -> Option<()> {
            std::future::pending().await
        }
        async fn run(&mut self, _: Why<()>) -> Outcome {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn cancelling_stops_a_run_in_progress_and_the_beats_go_on_during_a_run() {
        let heartbeats = Heartbeats::default();
        let cancel = CancellationToken::new();
        let task =
            tokio::spawn(Driver::new("stuck", heartbeats.clone(), cancel.clone()).drive(Stuck));
        // Real time: the heartbeats use the clock the watchdog reads.
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        assert!(
            heartbeats.stalled(Duration::from_millis(1_500)).is_empty(),
            "a run in progress still beats"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("cancel ends a run in progress")
            .expect("no panic");
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        assert_eq!(
            heartbeats.stalled(Duration::from_millis(1_500)),
            ["stuck"],
            "a stopped loop no longer beats"
        );
    }
}
