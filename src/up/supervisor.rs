//! The supervisor of `medallion up`: every part of the service (the stream,
//! the scheduler, the server, table upkeep) runs as a task of its own; a part
//! that fails is reported and started again after a growing pause, and never
//! takes the others down. A shutdown (Ctrl-C, SIGTERM) is passed to every part,
//! which finishes what it is doing at a safe point; a part still running after
//! the grace period is abandoned.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::error::Result;

/// Tells a part to stop; cheap to clone. A part checks `is_stopping` at its
/// safe points or awaits `stopped`.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// A signal of its own and the sender that raises it (for work run
    /// outside a supervisor, and tests).
    pub fn pair() -> (watch::Sender<bool>, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (sender, Shutdown { receiver })
    }

    pub fn is_stopping(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once a shutdown was asked for.
    pub async fn stopped(&self) {
        let mut receiver = self.receiver.clone();
        // An error means the supervisor is gone: stop too.
        let _ = receiver.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration`; returns false when a shutdown cut it short.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.stopped() => false,
        }
    }
}

/// The future of one run of a part.
pub type PartRun = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Starts one run of a part.
pub type PartFactory = Box<dyn Fn(Shutdown) -> PartRun + Send + Sync>;

/// How the supervisor treats a part that ends.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// The first pause before a restart; doubled after each failure in a row.
    pub first_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// A run that lasted this long resets the pause to `first_backoff`.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// What a part is doing, for `medallion status` and the logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartStatus {
    pub state: PartState,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    Running,
    /// Failed; waiting before the next start.
    Restarting,
    /// Ended on its own or on shutdown.
    Stopped,
}

/// Called when a part fails: (part name, one-line error).
pub type FailureHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The parts of the service and their states.
pub struct Supervisor {
    parts: Vec<(String, PartFactory, RestartPolicy)>,
    statuses: Arc<Mutex<BTreeMap<String, PartStatus>>>,
    on_failure: Option<FailureHook>,
    stop: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor { parts: Vec::new(), statuses: Default::default(), on_failure: None, stop: watch::channel(false).0 }
    }

    /// Adds a part; `start` is called for its first run and every restart.
    pub fn add<F, Fut>(&mut self, name: &str, policy: RestartPolicy, start: F)
    where
        F: Fn(Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let factory: PartFactory = Box::new(move |shutdown| Box::pin(start(shutdown)));
        self.parts.push((name.to_string(), factory, policy));
    }

    /// Called with each failure of a part (for alerts).
    pub fn on_failure(&mut self, hook: FailureHook) {
        self.on_failure = Some(hook);
    }

    /// A shutdown signal, as the parts get it (for work started outside them).
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown { receiver: self.stop.subscribe() }
    }

    /// The states of the parts, shared: read it while `run` goes on.
    pub fn statuses(&self) -> Arc<Mutex<BTreeMap<String, PartStatus>>> {
        self.statuses.clone()
    }

    /// Runs every part until `stop_requested` resolves, then asks them to
    /// stop and waits at most `grace` for them. Returns the names of the parts
    /// that had to be abandoned (none when all stopped in time).
    pub async fn run(self, stop_requested: impl Future<Output = ()>, grace: Duration) -> Vec<String> {
        let Supervisor { parts, statuses, on_failure, stop } = self;
        let mut handles = Vec::new();
        for (name, factory, policy) in parts {
            let shutdown = Shutdown { receiver: stop.subscribe() };
            let statuses = statuses.clone();
            let on_failure = on_failure.clone();
            let task_name = name.clone();
            let handle = tokio::spawn(async move {
                keep_running(&task_name, factory, policy, shutdown, statuses, on_failure).await;
            });
            handles.push((name, handle));
        }
        stop_requested.await;
        let _ = stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        let mut abandoned = Vec::new();
        for (name, mut handle) in handles {
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                tracing::warn!("{name} did not stop within {grace:?}: abandoned");
                handle.abort();
                abandoned.push(name);
            }
        }
        abandoned
    }
}

/// Runs one part again and again until a shutdown.
async fn keep_running(
    name: &str,
    factory: PartFactory,
    policy: RestartPolicy,
    shutdown: Shutdown,
    statuses: Arc<Mutex<BTreeMap<String, PartStatus>>>,
    on_failure: Option<FailureHook>,
) {
    let set = |update: &dyn Fn(&mut PartStatus)| {
        let mut statuses = statuses.lock().expect("status lock");
        let status = statuses.entry(name.to_string()).or_insert(PartStatus {
            state: PartState::Running,
            restarts: 0,
            last_error: None,
            last_error_at: None,
        });
        update(status);
    };
    let mut backoff = policy.first_backoff;
    loop {
        set(&|s| s.state = PartState::Running);
        let started = tokio::time::Instant::now();
        // A panic inside a part is a failure like any other.
        let outcome = tokio::spawn(factory(shutdown.clone())).await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(join) if join.is_panic() => Some("the task panicked".to_string()),
            Err(_) => Some("the task was cancelled".to_string()),
        };
        if shutdown.is_stopping() {
            set(&|s| s.state = PartState::Stopped);
            return;
        }
        let Some(error) = error else {
            // A part that ends on its own is done (e.g. nothing to do).
            set(&|s| s.state = PartState::Stopped);
            return;
        };
        if started.elapsed() >= policy.healthy_after {
            backoff = policy.first_backoff;
        }
        tracing::warn!("{name} failed: {error}; restarting in {backoff:?}");
        set(&|s| {
            s.state = PartState::Restarting;
            s.restarts += 1;
            s.last_error = Some(error.clone());
            s.last_error_at = Some(Utc::now());
        });
        if let Some(hook) = &on_failure {
            hook(name, &error);
        }
        if !shutdown.sleep(backoff).await {
            set(&|s| s.state = PartState::Stopped);
            return;
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> RestartPolicy {
        RestartPolicy {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            healthy_after: Duration::from_secs(60),
        }
    }

    /// Resolves once `counter` reaches `target` (or after 20 s, so that a
    /// broken supervisor fails the test instead of hanging it).
    async fn until(counter: Arc<AtomicU32>, target: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while counter.load(Ordering::SeqCst) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_failing_part_is_restarted_and_does_not_stop_the_others() {
        let mut supervisor = Supervisor::new();
        let failures = Arc::new(AtomicU32::new(0));
        let steady_runs = Arc::new(AtomicU32::new(0));
        let reported = Arc::new(Mutex::new(Vec::new()));
        let counter = failures.clone();
        supervisor.add("flaky", quick(), move |_| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err(Error::Config("boom".into()))
            }
        });
        let runs = steady_runs.clone();
        supervisor.add("steady", quick(), move |shutdown| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                shutdown.stopped().await;
                Ok(())
            }
        });
        let seen = reported.clone();
        supervisor.on_failure(Arc::new(move |part, error| seen.lock().unwrap().push(format!("{part}: {error}"))));
        let statuses = supervisor.statuses();
        let abandoned = supervisor.run(until(failures.clone(), 3), Duration::from_secs(5)).await;
        assert!(abandoned.is_empty());
        // Stopped as soon as the third run failed: a restart loop without
        // pauses would have run many more times by then.
        let tries = failures.load(Ordering::SeqCst);
        assert!((3..=4).contains(&tries), "{tries} runs of the failing part");
        assert_eq!(steady_runs.load(Ordering::SeqCst), 1, "the steady part ran once, undisturbed");
        assert_eq!(reported.lock().unwrap().first().map(String::as_str), Some("flaky: boom"));
        let statuses = statuses.lock().unwrap();
        // Every run failed; the last one may have met the shutdown first.
        let restarts = statuses["flaky"].restarts;
        assert!(restarts == tries || restarts + 1 == tries, "{restarts} restarts for {tries} runs");
        assert_eq!(statuses["steady"].state, PartState::Stopped);
    }

    #[tokio::test]
    async fn a_part_that_ignores_shutdown_is_abandoned_after_the_grace_period() {
        let mut supervisor = Supervisor::new();
        supervisor.add("stubborn", quick(), |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        supervisor.add("polite", quick(), |shutdown| async move {
            shutdown.stopped().await;
            Ok(())
        });
        let started = std::time::Instant::now();
        let abandoned = supervisor.run(async {}, Duration::from_millis(200)).await;
        assert_eq!(abandoned, vec!["stubborn".to_string()]);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_panicking_part_is_restarted() {
        let mut supervisor = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        supervisor.add("panics", quick(), move |shutdown| {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run panics");
                }
                shutdown.stopped().await;
                Ok(())
            }
        });
        supervisor.run(until(runs.clone(), 2), Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once after the panic");
    }
}
