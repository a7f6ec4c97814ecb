//! The background tasks of a running server, supervised: one cancellation token asks them all to
//! stop, one tracker waits for them, and a task that ends before it was asked to stop (returns,
//! fails or panics) is logged, marks the server not ready and stops it with an error.
//!
//! Tasks that must recover from a passing fault (the applier losing its connection, the hub
//! losing its LISTEN) do so inside themselves; ending is never a way to retry.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::db::Readiness;

/// How a supervised task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The task's name, as logged (`applier`, `change hub`, …).
    pub task: &'static str,
    /// Why: its error, its panic, or that it returned while it should have kept running.
    pub reason: String,
    /// Whether it ended before the server was asked to stop.
    pub early: bool,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} {}", self.task, self.reason)
    }
}

/// Spawns and watches a server's background tasks.
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    readiness: Readiness,
    /// Failures seen so far (early ends, and errors while draining).
    failures: Arc<Mutex<Vec<Ended>>>,
}

impl Supervisor {
    /// A supervisor whose failures mark `readiness` not ready.
    pub fn new(readiness: Readiness) -> Supervisor {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Supervisor {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ended_tx,
            ended_rx,
            readiness,
            failures: Arc::default(),
        }
    }

    /// The token every task watches; cancelled once, when the server stops.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The same stop signal as a `watch` (true once stopping), for tasks that select on one.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.token.is_cancelled());
        let token = self.token.clone();
        // Not tracked: it holds nothing and ends with the token.
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => { let _ = tx.send(true); }
                () = tx.closed() => {}
            }
        });
        rx
    }

    /// A future that completes once the server is stopping.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Runs `task` until it ends. It is meant to run until the server stops: ending before
    /// that, in any way, stops the server with an error; an error while stopping is reported too.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Outcome,
    {
        let inner = tokio::spawn(task);
        let token = self.token.clone();
        let ended_tx = self.ended_tx.clone();
        let readiness = self.readiness.clone();
        let failures = self.failures.clone();
        self.tracker.spawn(async move {
            let outcome = inner.await.map(Outcome::into_result);
            let early = !token.is_cancelled();
            let reason = match outcome {
                Ok(Ok(())) if !early => return,
                Ok(Ok(())) => "ended while the server was running".to_string(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(e) => format!("was cancelled: {e}"),
            };
            let ended = Ended {
                task: name,
                reason,
                early,
            };
            error!(task = name, reason = %ended.reason, early, "a background task ended");
            if early {
                readiness.fail(format!("{ended}; the server is stopping"));
            }
            failures.lock().unwrap_or_else(|p| p.into_inner()).push(ended.clone());
            let _ = ended_tx.send(ended);
        });
    }

    /// Like [`Supervisor::spawn`], but runs `task` on an OS thread of its own (named `name`, as
    /// `top -H` shows it; with a one-thread runtime), for a task whose stretches of CPU must not
    /// hold up the shared runtime's other tasks: the kernel shares the cores between it and the
    /// runtime's workers. Its panics are reported as a spawned task's are.
    pub fn spawn_on_thread<F>(&self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Outcome,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // Held by the supervising task: once it is dropped (its runtime shut down), the thread
        // drops `task` too, as a runtime drops its tasks, instead of running on unsupervised.
        let (owner_tx, owner_gone) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    Ok::<_, std::io::Error>(runtime.block_on(async move {
                        tokio::select! {
                            biased;
                            output = task => Some(output),
                            _ = owner_gone => None,
                        }
                    }))
                }));
                let _ = done_tx.send(ended);
            });
        self.spawn(name, async move {
            let _owner = owner_tx;
            if let Err(e) = thread {
                return Err(format!("could not start its thread: {e}"));
            }
            match done_rx.await {
                Ok(Ok(Ok(Some(output)))) => output.into_result(),
                Ok(Ok(Ok(None))) => Err("was dropped".to_string()),
                Ok(Ok(Err(e))) => Err(format!("could not start its runtime: {e}")),
                // Reported by `spawn` as this task's panic.
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => Err("its thread ended without a word".to_string()),
            }
        });
    }

    /// Waits until `shutdown` completes or a task ends early, whichever is first, and returns
    /// the task that ended early, if one did. [`Supervisor::drain`] then stops the others.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> Option<Ended> {
        let early = tokio::select! {
            () = shutdown => {
                info!("asked to stop");
                None
            }
            Some(ended) = self.ended_rx.recv() => Some(ended),
        };
        early
    }

    /// Asks every task to stop and waits for them to end; returns every failure seen, the early
    /// one first.
    pub async fn drain(&self) -> Vec<Ended> {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many tasks have not ended yet.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

/// What a task's output says about how it ended.
pub trait Outcome: Send + 'static {
    fn into_result(self) -> Result<(), String>;
}

/// A task with nothing to report: ending is all it can do.
impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display + Send + 'static> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> Supervisor {
        // A pool that never connects: readiness is read only through the failure flag here.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        Supervisor::new(Readiness::new(pool))
    }

    #[tokio::test]
    async fn a_task_that_returns_early_stops_the_others_and_marks_the_server_not_ready() {
        let mut s = supervisor();
        let token = s.token();
        s.spawn("long task", async move {
            token.cancelled().await;
            Ok::<_, String>(())
        });
        s.spawn("short task", async { Ok::<_, String>(()) });
        let early = s.run_until(std::future::pending()).await.expect("an early end");
        assert_eq!(early.task, "short task");
        assert_eq!(early.reason, "ended while the server was running");
        let failures = s.drain().await;
        assert_eq!(failures, vec![early]);
        assert_eq!(s.running(), 0);
        let why = s.readiness.failure().expect("not ready");
        assert!(why.contains("short task ended while the server was running"), "{why}");
    }

    #[tokio::test]
    async fn a_task_that_panics_or_fails_is_reported_with_its_message() {
        let mut s = supervisor();
        s.spawn("panicking task", async {
            if true {
                panic!("boom at row 7");
            }
            Ok::<_, String>(())
        });
        let early = s.run_until(std::future::pending()).await.expect("an early end");
        assert_eq!(early.reason, "panicked: boom at row 7");

        let mut s = supervisor();
        s.spawn("failing task", async { Err::<(), _>("the socket closed") });
        let early = s.run_until(std::future::pending()).await.expect("an early end");
        assert_eq!(early.to_string(), "the failing task failed: the socket closed");
    }

    #[tokio::test]
    async fn a_clean_stop_reports_nothing_but_an_error_while_stopping_is_kept() {
        let mut s = supervisor();
        for name in ["a", "b"] {
            let mut stop = s.stop_signal();
            s.spawn(name, async move {
                let _ = stop.wait_for(|s| *s).await;
                Ok::<_, String>(())
            });
        }
        let stopped = s.stopped();
        s.spawn("c", async move {
            stopped.await;
            Err::<(), _>("could not flush")
        });
        assert_eq!(s.run_until(async {}).await, None);
        let failures = s.drain().await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].task, "c");
        assert!(!failures[0].early);
        // Stopping on request is not a failure of readiness.
        assert_eq!(s.readiness.failure(), None);
    }

    #[tokio::test]
    async fn a_task_on_its_own_thread_runs_while_it_blocks_and_stops_panics_and_fails_like_any_other() {
        // It blocks its thread until a task of this (one-thread) runtime answers: on the shared
        // runtime that would never happen.
        let mut s = supervisor();
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<String>();
        let mut stop = s.stop_signal();
        s.spawn_on_thread("blocking task", async move {
            ask_tx.send(()).map_err(|e| e.to_string())?;
            let answer = answer_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .map_err(|e| format!("no answer: {e}"))?;
            assert_eq!(answer, "answered");
            let here = std::thread::current().name().map(str::to_string);
            assert_eq!(here.as_deref(), Some("blocking task"));
            let _ = stop.wait_for(|s| *s).await;
            Ok::<_, String>(())
        });
        let answered = tokio::task::spawn_blocking(move || ask_rx.recv());
        tokio::time::timeout(std::time::Duration::from_secs(30), answered)
            .await
            .expect("the task on its own thread never asked")
            .expect("the waiter panicked")
            .expect("the task's channel closed");
        answer_tx.send("answered".into()).expect("the task is waiting");
        assert_eq!(s.run_until(async {}).await, None);
        assert_eq!(s.drain().await, vec![], "a clean stop is no failure");

        let mut s = supervisor();
        s.spawn_on_thread("panicking thread", async {
            if true {
                panic!("boom on the thread");
            }
            Ok::<_, String>(())
        });
        let early = s.run_until(std::future::pending()).await.expect("an early end");
        assert_eq!(early.to_string(), "the panicking thread panicked: boom on the thread");
        assert!(s.readiness.failure().is_some());

        let mut s = supervisor();
        s.spawn_on_thread("failing thread", async { Err::<(), _>("lost the lock") });
        let early = s.run_until(std::future::pending()).await.expect("an early end");
        assert_eq!(early.to_string(), "the failing thread failed: lost the lock");
    }

    #[test]
    fn a_task_on_its_own_thread_is_dropped_with_the_runtime_that_supervises_it() {
        struct Guard(std::sync::mpsc::Sender<&'static str>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.send("dropped");
            }
        }
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let s = supervisor();
            s.spawn_on_thread("forever", async move {
                let _guard = Guard(dropped_tx);
                started_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
            // The runtime goes away without stopping the supervisor (a test's end, a crash).
            std::mem::forget(s);
        });
        started_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the task started on its thread");
        drop(runtime);
        assert_eq!(
            dropped_rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok("dropped"),
            "the task on its own thread outlived the runtime that supervised it"
        );
    }
}
