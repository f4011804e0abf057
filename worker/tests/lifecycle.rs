//! The lifecycle hook seen from a worker run in-process on a private Redis: a hook added with
//! `WorkerBuilder::hook` is told of a success, a failure, a retry, a rejection, a revocation and
//! a panic on the message path (outside the task's handler), in the order they happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_testkit::RedisServer;
use celeriac_worker::client::{Client, Signature};
use celeriac_worker::config::{Settings, WorkerArgs};
use celeriac_worker::{
    Lifecycle, PyException, Revocation, TaskContext, TaskError, TaskOptions, TaskRef, Worker,
};
use serde_json::Value;

/// Records every call as `<what> <task name> <task id>[ detail]`.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn push(&self, what: &str, t: &TaskRef<'_>, detail: &str) {
        let line = format!("{what} {} {}{detail}", t.name, t.id);
        self.0.lock().unwrap().push(line);
    }

    /// The calls about task `id`, without the id.
    fn of(&self, id: &str) -> Vec<String> {
        let suffix = format!(" {id}");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let (head, detail) = l.split_once(&suffix)?;
                Some(format!("{head}{detail}"))
            })
            .collect()
    }
}

impl Lifecycle for Recorder {
    fn received(&self, t: &TaskRef<'_>) {
        self.push("received", t, "");
    }
    fn started(&self, t: &TaskRef<'_>) {
        self.push("started", t, "");
    }
    fn succeeded(&self, t: &TaskRef<'_>, result: &Value, _runtime: Duration) {
        self.push("succeeded", t, &format!(" {result}"));
    }
    fn failed(&self, t: &TaskRef<'_>, exception: &PyException, _runtime: Option<Duration>) {
        self.push("failed", t, &format!(" {}", exception.exc_type));
    }
    fn retried(&self, t: &TaskRef<'_>, exception: &PyException) {
        self.push("retried", t, &format!(" {}", exception.exc_type));
    }
    fn revoked(&self, t: &TaskRef<'_>, why: Revocation) {
        self.push("revoked", t, &format!(" {why:?}"));
    }
    fn rejected(&self, t: &TaskRef<'_>, requeue: bool) {
        self.push("rejected", t, &format!(" requeue={requeue}"));
    }
}

/// Panics when told that a `t.boom` task starts: a panic on the message path, outside the task.
struct PanicOnStart;

impl Lifecycle for PanicOnStart {
    fn started(&self, t: &TaskRef<'_>) {
        assert_ne!(t.name, "t.boom", "a hook panics");
    }
}

/// Wait until task `id`'s calls number `n` (or 30 s), and return them.
async fn calls(recorder: &Recorder, id: &str, n: usize) -> Vec<String> {
    for _ in 0..300 {
        if recorder.of(id).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recorder.of(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_is_told_each_step_of_each_outcome() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url(0);
    let env = [
        ("CELERY_BROKER_URL", url.as_str()),
        ("CELERY_RESULT_BACKEND", url.as_str()),
        ("CELERY_TASK_ACKS_LATE", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = Settings::load(&WorkerArgs::default(), env).expect("settings");
    let recorder = Arc::new(Recorder::default());
    let once = TaskOptions {
        max_retries: Some(1),
        ..TaskOptions::default()
    };
    let worker = Worker::builder()
        .settings(settings)
        .hook(recorder.clone())
        .hook(PanicOnStart)
        .task("t.ok", |_: TaskContext, (a,): (i64,)| async move {
            Ok::<_, TaskError>(a + 1)
        })
        .task("t.fail", |_: TaskContext, (): ()| async move {
            Err::<(), _>(TaskError::Fail(PyException::new("ValueError", "bad")))
        })
        .task_with_options("t.retry", once, |_: TaskContext, (): ()| async move {
            Err::<(), _>(TaskError::retry_in(Duration::ZERO))
        })
        .task("t.reject", |_: TaskContext, (): ()| async move {
            Err::<(), _>(TaskError::Reject {
                reason: "no".into(),
                requeue: false,
            })
        })
        .task("t.boom", |_: TaskContext, (): ()| async move {
            Ok::<_, TaskError>(())
        })
        .build();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let client = Client::connect(&url, Some(&url)).await.expect("client");
    let send = |sig: Signature| {
        let client = &client;
        async move { client.send(&sig).await.expect("sent").id().to_string() }
    };
    let ok = send(Signature::new("t.ok").arg(1)).await;
    let fail = send(Signature::new("t.fail")).await;
    let retry = send(Signature::new("t.retry")).await;
    let reject = send(Signature::new("t.reject")).await;
    let boom = send(Signature::new("t.boom")).await;
    let expired = send(Signature::new("t.ok").arg(1).expires_in(-10.0)).await;

    assert_eq!(
        calls(&recorder, &ok, 3).await,
        ["received t.ok", "started t.ok", "succeeded t.ok 2"]
    );
    assert_eq!(
        calls(&recorder, &fail, 3).await,
        [
            "received t.fail",
            "started t.fail",
            "failed t.fail ValueError"
        ]
    );
    // The first run's retry is published; the second run's retry exceeds `max_retries`. As in
    // Celery (the retry is published, then `task-retried` is sent), the second run may be
    // received before the first run's `retried` is reported: only the first run's start is
    // ordered against the rest.
    let mut retry_calls = calls(&recorder, &retry, 6).await;
    assert_eq!(retry_calls[..2], ["received t.retry", "started t.retry"]);
    let mut rest = retry_calls.split_off(2);
    rest.sort();
    assert_eq!(
        rest,
        [
            "failed t.retry MaxRetriesExceededError",
            "received t.retry",
            "retried t.retry Retry",
            "started t.retry",
        ]
    );
    // Celery 5.7: a rejection without requeue is a failure (`Reject`), then the message is
    // rejected (dead-lettered).
    assert_eq!(
        calls(&recorder, &reject, 4).await,
        [
            "received t.reject",
            "started t.reject",
            "failed t.reject Reject",
            "rejected t.reject requeue=false",
        ]
    );
    // The worker catches the panic and fails the task through the hooks, as any failure.
    assert_eq!(
        calls(&recorder, &boom, 3).await,
        [
            "received t.boom",
            "started t.boom",
            "failed t.boom RuntimeError"
        ]
    );
    assert_eq!(
        calls(&recorder, &expired, 2).await,
        ["received t.ok", "revoked t.ok Expired"]
    );
    stop.send(()).expect("the worker runs");
    running
        .await
        .expect("joined")
        .expect("the worker stopped cleanly");
}
