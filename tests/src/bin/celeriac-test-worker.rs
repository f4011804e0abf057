//! The worker the end-to-end tests run as a process: test tasks under the `t.` names that
//! `tests/python/celery_app.py` also defines for Python workers, and the demo's `demo.` tasks.

// The demo's tasks (`demo.add`, `demo.fail`, ...), exactly as the demo worker registers them.
#[path = "../../../worker/examples/demo/tasks.rs"]
mod demo_tasks;

use std::time::Duration;

use celeriac_broker_bridge::codec::Signature;
use celeriac_worker::config::WorkerArgs;
use celeriac_worker::{PyException, TaskContext, TaskError, TaskOptions, Worker};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Sleeps `ms`; when its soft time limit passes first it catches it, cleans up for `cleanup_ms`
/// (awaiting, as cleanup code does) and returns "soft" (else "slept").
#[celeriac_worker::task(name = "t.soft_aware")]
async fn soft_aware(
    ctx: TaskContext,
    ms: u64,
    #[default(0)] cleanup_ms: u64,
) -> Result<String, TaskError> {
    let slept = ctx
        .catch_soft_time_limit(tokio::time::sleep(Duration::from_millis(ms)))
        .await;
    match slept {
        Ok(()) => Ok("slept".into()),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(cleanup_ms)).await;
            Ok("soft".into())
        }
    }
}

/// Sleeps `ms`, catching its soft time limit and raising it again (`except: ...; raise`).
#[celeriac_worker::task(name = "t.soft_fail")]
async fn soft_fail(ctx: TaskContext, ms: u64) -> Result<u64, TaskError> {
    ctx.catch_soft_time_limit(tokio::time::sleep(Duration::from_millis(ms)))
        .await?;
    Ok(ms)
}

/// Busy-loops `ms` on its own thread (a plain `fn` task is a blocking one), checking its limits.
#[celeriac_worker::task(name = "t.spin")]
fn spin(ctx: TaskContext, ms: u64) -> Result<bool, TaskError> {
    let start = std::time::Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_millis(ms) {
        n = n.wrapping_add(1);
        ctx.check_time_limits()?;
    }
    Ok(n > 0)
}

/// A new-style errback (three parameters, so called in the worker with `(request, exc,
/// traceback)`): stores `[exc_type, traceback]` under the failed task's id in the hash
/// `errbacks` of the broker's Redis.
#[celeriac_worker::task(name = "t.errback_new")]
async fn errback_new(request: Value, exc: Value, traceback: Value) -> Result<(), TaskError> {
    let id = request["id"].as_str().unwrap_or_default().to_string();
    let url =
        std::env::var("CELERY_BROKER_URL").unwrap_or_else(|_| "redis://localhost:6379/0".into());
    let client = celeriac_broker_bridge::redis_url::parse(&url)
        .and_then(|u| u.client())
        .map_err(anyhow::Error::from)?;
    let mut conn = connection(&client).await?;
    redis::cmd("HSET")
        .arg("errbacks")
        .arg(id)
        .arg(serde_json::json!([exc["exc_type"], traceback]).to_string())
        .query_async::<i64>(&mut conn)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tracked = TaskOptions {
        track_started: Some(true),
        ..TaskOptions::default()
    };
    // `t.mark` counts its executions per task id in the hash `marks` of the broker's Redis.
    // On an SQS broker, in the result backend's Redis (where Python's `t.mark` counts too).
    let mut broker =
        std::env::var("CELERY_BROKER_URL").unwrap_or_else(|_| "redis://localhost:6379/0".into());
    if broker.starts_with("sqs://") {
        broker = std::env::var("CELERY_RESULT_BACKEND")?;
    }
    let marks = celeriac_broker_bridge::redis_url::parse(&broker)?.client()?;
    let canvas_redis = marks.clone();
    let stamps = marks.clone();
    let rejects = marks.clone();
    // `t.chaos` and `t.chaos_sum` count executions in the Redis of `CELERIAC_TEST_TALLY_URL` (the
    // chaos run keeps it away from the fault proxy), default the broker's.
    let tally = match std::env::var("CELERIAC_TEST_TALLY_URL") {
        Ok(url) => redis::Client::open(url)?,
        Err(_) => marks.clone(),
    };
    let tally_sum = tally.clone();
    let builder = demo_tasks::register(Worker::builder())
        .task("t.add", |_: TaskContext, (a, b): (i64, i64)| async move {
            Ok::<_, TaskError>(a + b)
        })
        .task("t.echo", |_: TaskContext, (v,): (Value,)| async move {
            Ok::<_, TaskError>(v)
        })
        .task("t.fail", |_: TaskContext, (m,): (String,)| async move {
            Err::<(), _>(TaskError::fail("ValueError", m))
        })
        .task("t.sleep", |_: TaskContext, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(ms)
        })
        .task_with_options(
            "t.tracked",
            tracked,
            |_: TaskContext, (ms,): (u64,)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, TaskError>("done")
            },
        )
        .task("t.flaky", |ctx: TaskContext, (n,): (u32,)| async move {
            if ctx.retries < n {
                return Err(TaskError::retry_in(Duration::from_millis(100))
                    .because(PyException::new("ConnectionError", "not yet")));
            }
            Ok(ctx.retries)
        })
        .task(
            "t.retry_elsewhere",
            |ctx: TaskContext, (queue,): (String,)| async move {
                if ctx.retries == 0 {
                    return Err(TaskError::retry_in(Duration::from_millis(50))
                        .queue(queue)
                        .priority(7));
                }
                Ok(serde_json::json!([ctx.queue, ctx.delivery_info.priority, ctx.retries]))
            },
        )
        .task("t.always_retry", |_: TaskContext, (): ()| async move {
            Err::<(), _>(
                TaskError::retry_in(Duration::from_millis(50))
                    .max_retries(2)
                    .because(PyException::new("KeyError", "gone")),
            )
        })
        .task("t.panic", |_: TaskContext, (): ()| async move {
            if true {
                panic!("deliberate panic");
            }
            Ok::<_, TaskError>(())
        })
        .task("t.mark", move |ctx: TaskContext, (ms,): (u64,)| {
            let marks = marks.clone();
            async move {
                let mut conn = connection(&marks).await?;
                redis::cmd("HINCRBY")
                    .arg("marks")
                    .arg(&ctx.id)
                    .arg(1)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(anyhow::Error::from)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, TaskError>(ms)
            }
        })
        .task("t.mul", |_: TaskContext, (a, b): (i64, i64)| async move {
            Ok::<_, TaskError>(a * b)
        })
        .task("t.tsum", |_: TaskContext, (xs,): (Vec<i64>,)| async move {
            Ok::<_, TaskError>(xs.iter().sum::<i64>())
        })
        // Canvas: `t.tally` sums its list and counts its executions in `marks` (chord bodies);
        // `t.record` appends its args to the list `records` (errbacks); `t.replace_me` replaces
        // itself with `t.add`.
        .task("t.tally", {
            let marks = canvas_redis.clone();
            move |ctx: TaskContext, (xs,): (Vec<i64>,)| {
                let marks = marks.clone();
                async move {
                    let mut conn = connection(&marks).await?;
                    redis::cmd("HINCRBY")
                        .arg("marks")
                        .arg(&ctx.id)
                        .arg(1)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(anyhow::Error::from)?;
                    Ok::<_, TaskError>(xs.iter().sum::<i64>())
                }
            }
        })
        .task("t.record", {
            let marks = canvas_redis;
            move |ctx: TaskContext, _: celeriac_worker::CallArgs| {
                let marks = marks.clone();
                async move {
                    let mut conn = connection(&marks).await?;
                    redis::cmd("RPUSH")
                        .arg("records")
                        .arg(Value::Array(ctx.args.clone()).to_string())
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(anyhow::Error::from)?;
                    Ok::<_, TaskError>(())
                }
            }
        })
        .task(
            "t.replace_me",
            |_: TaskContext, (a, b): (i64, i64)| async move {
                let sig = Signature::new("t.add", vec![a.into(), b.into()], Default::default());
                Err::<(), _>(TaskError::replace(sig))
            },
        )
        // `t.replace_chain` replaces itself with `t.add(a, b) | t.mul(10)`, `t.replace_group`
        // with `group(t.add(n, 1) for n in nums)`, `t.replace_empty` with an empty chain.
        .task(
            "t.replace_chain",
            |_: TaskContext, (a, b): (i64, i64)| async move {
                use celeriac_worker::client::{chain, Signature};
                let flow = chain([
                    Signature::new("t.add").arg(a).arg(b),
                    Signature::new("t.mul").arg(10),
                ]);
                Err::<(), _>(TaskError::replace(flow))
            },
        )
        .task(
            "t.replace_group",
            |_: TaskContext, (nums,): (Vec<i64>,)| async move {
                use celeriac_worker::client::{group, Signature};
                let adds = nums.iter().map(|n| Signature::new("t.add").arg(*n).arg(1));
                Err::<(), _>(TaskError::replace(group(adds)))
            },
        )
        .task("t.replace_empty", |_: TaskContext, (): ()| async move {
            Err::<(), _>(TaskError::replace(celeriac_worker::client::chain([])))
        })
        // Limits: `t.stamp` appends its start time (Unix ms) to the list `stamps` (rate limits);
        // `t.soft_aware` and `t.soft_fail` (below) catch their soft time limit; `t.spin`
        // busy-loops `ms` on its own thread checking its limits; `t.spin_blind` never checks.
        .task("t.stamp", move |_: TaskContext, (): ()| {
            let stamps = stamps.clone();
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(anyhow::Error::from)?;
                let mut conn = connection(&stamps).await?;
                redis::cmd("RPUSH")
                    .arg("stamps")
                    .arg(now.as_secs_f64() * 1000.0)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(anyhow::Error::from)?;
                Ok::<_, TaskError>(())
            }
        })
        .register(soft_aware)
        .register(errback_new)
        .register(soft_fail)
        .register(spin)
        .blocking_task("t.spin_blind", |_: TaskContext, (ms,): (u64,)| {
            let start = std::time::Instant::now();
            let mut n: u64 = 0;
            while start.elapsed() < Duration::from_millis(ms) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
            Ok::<_, TaskError>(n > 0)
        })
        // Rejection: `t.reject` rejects its message (Celery's `Reject(requeue=...)`);
        // `t.reject_once` counts its runs in `marks`, rejects with requeue on the first and
        // returns the count on the next.
        .task(
            "t.reject",
            |_: TaskContext, (requeue,): (bool,)| async move {
                Err::<(), _>(TaskError::reject("deliberate rejection", requeue))
            },
        )
        .task("t.reject_once", move |ctx: TaskContext, (): ()| {
            let marks = rejects.clone();
            async move {
                let mut conn = connection(&marks).await?;
                let runs: i64 = redis::cmd("HINCRBY")
                    .arg("marks")
                    .arg(&ctx.id)
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(anyhow::Error::from)?;
                if runs == 1 {
                    return Err(TaskError::reject("first run", true));
                }
                Ok(runs)
            }
        })
        // Process tasks (run in child processes): `t.burn` busy-loops `ms` and never checks
        // anything; `t.burn_soft` loops until its soft limit, then returns "soft" or (with
        // `fail`) fails with SoftTimeLimitExceeded; `t.pid` returns its process id;
        // `t.crash_once` aborts its process unless the file `path` exists (it creates it first).
        .process_task("t.burn", |(ms,): (u64,)| {
            let start = std::time::Instant::now();
            let mut n: u64 = 0;
            while start.elapsed() < Duration::from_millis(ms) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
            Ok::<_, TaskError>(n > 0)
        })
        .process_task("t.burn_soft", |(fail,): (bool,)| {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
                if fail {
                    celeriac_worker::check_soft_time_limit()?;
                } else if celeriac_worker::check_soft_time_limit().is_err() {
                    return Ok::<_, TaskError>("soft");
                }
            }
        })
        .process_task("t.pid", |(): ()| Ok::<_, TaskError>(std::process::id()))
        .process_task("t.crash_once", |(path,): (String,)| {
            if std::path::Path::new(&path).exists() {
                return Ok::<_, TaskError>("survived".to_string());
            }
            std::fs::write(&path, b"crashed once").map_err(anyhow::Error::from)?;
            std::process::abort()
        })
        // Chaos: `t.chaos(ms, retry_once)` records its run (see `tally`), sleeps, and asks for one
        // retry on its first run when `retry_once`; `t.chaos_sum` is a recorded chord body.
        .task(
            "t.chaos",
            move |ctx: TaskContext, (ms, retry_once): (u64, bool)| {
                let tally = tally.clone();
                async move {
                    let mut conn = connection(&tally).await?;
                    tally_start(&mut conn, &ctx).await?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    tally_end(&mut conn, &ctx).await?;
                    if retry_once && ctx.retries == 0 {
                        return Err(TaskError::retry_in(Duration::from_secs(1))
                            .because(PyException::new("ConnectionError", "retry once")));
                    }
                    Ok::<_, TaskError>(ms)
                }
            },
        )
        .task(
            "t.chaos_sum",
            move |ctx: TaskContext, (xs,): (Vec<i64>,)| {
                let tally = tally_sum.clone();
                async move {
                    let mut conn = connection(&tally).await?;
                    tally_start(&mut conn, &ctx).await?;
                    tally_end(&mut conn, &ctx).await?;
                    Ok::<_, TaskError>(xs.iter().sum::<i64>())
                }
            },
        )
        // Sends task `name` with `args` to `queue` through the producer API (as a child of this
        // task); with `wait`, also waits for its result (`disable_sync_subtasks=False`).
        .task(
            "t.spawn",
            |ctx: TaskContext, (name, args, queue, wait): (String, Vec<Value>, String, bool)| async move {
                let sig = celeriac_worker::client::Signature::new(name)
                    .args(args)
                    .queue(queue);
                let child = ctx.client()?.send(&sig).await?;
                let value = match wait {
                    true => child.get_with(Duration::from_secs(60), false).await?,
                    false => Value::Null,
                };
                Ok::<_, TaskError>(serde_json::json!({"id": child.id(), "value": value}))
            },
        )
        // A chord member that adds a chord of `t.add(num, val)` summed by `t.tsum` to its chord
        // (Celery's integration task `add_chord_to_chord`), then returns 0.
        .task(
            "t.grow_chord",
            |ctx: TaskContext, (nums, val): (Vec<i64>, i64)| async move {
                use celeriac_worker::client::{chord, Signature};
                let adds = nums
                    .iter()
                    .map(|n| Signature::new("t.add").arg(*n).arg(val));
                ctx.client()?
                    .add_to_chord(&chord(adds, Signature::new("t.tsum")))
                    .await?;
                Ok::<_, TaskError>(0)
            },
        )
        // Sends a chain with a group inside and returns its result, as Celery's integration task
        // `build_chain_inside_task` (stored as the result's `as_tuple()`).
        .task("t.build_chain", |ctx: TaskContext, (): ()| async move {
            use celeriac_worker::client::{chain, group, Signature};
            let add = |a: i64| Signature::new("t.add").arg(a);
            let flow = chain([
                add(1).arg(1),
                add(2),
                group([add(3), add(4)]),
                Signature::new("t.tsum"),
            ]);
            Ok::<_, TaskError>(ctx.client()?.send(&flow).await?.as_tuple())
        })
        // Waits for a subtask with a plain `get`, which Celery refuses in a task.
        .task("t.join", |ctx: TaskContext, (a, b): (i64, i64)| async move {
            let sig = celeriac_worker::client::Signature::new("t.add").arg(a).arg(b);
            let child = ctx.client()?.send(&sig).await?;
            Ok::<_, TaskError>(child.get(Duration::from_secs(60)).await?)
        })
        // A chord member that adds `t.add(n, n)` to its chord, then returns `n`.
        .task("t.grow", |ctx: TaskContext, (n,): (i64,)| async move {
            let more = celeriac_worker::client::Signature::new("t.add").arg(n).arg(n);
            ctx.client()?.add_to_chord(&more).await?;
            Ok::<_, TaskError>(n)
        })
        .task("t.whoami", |ctx: TaskContext, (): ()| async move {
            Ok::<_, TaskError>(serde_json::json!({
                "id": ctx.id, "retries": ctx.retries, "queue": ctx.queue, "hostname": ctx.hostname,
            }))
        });
    celeriac_worker::cli::worker::run(builder, &args.worker)
}

/// A connection for a test task's bookkeeping, with timeouts meant for an overloaded test
/// machine (redis-rs's defaults, 1 s to connect and 500 ms per reply, fail the task there).
async fn connection(client: &redis::Client) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(30)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A chaos task starts: count the execution in `execs`, append the node to `runs:<id>` and list
/// the id in `running:<node>`.
async fn tally_start(
    conn: &mut redis::aio::MultiplexedConnection,
    ctx: &TaskContext,
) -> anyhow::Result<()> {
    redis::pipe()
        .atomic()
        .hincr("execs", &ctx.id, 1)
        .ignore()
        .rpush(format!("runs:{}", ctx.id), &ctx.hostname)
        .ignore()
        .sadd(format!("running:{}", ctx.hostname), &ctx.id)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// A chaos task's body is done: move its id to `finished:<node>` (its message may still be
/// unacked; the chaos run checks that after a kill) and count the end in `ends`.
async fn tally_end(
    conn: &mut redis::aio::MultiplexedConnection,
    ctx: &TaskContext,
) -> anyhow::Result<()> {
    redis::pipe()
        .cmd("SMOVE")
        .arg(format!("running:{}", ctx.hostname))
        .arg(format!("finished:{}", ctx.hostname))
        .arg(&ctx.id)
        .ignore()
        .hincr("ends", &ctx.id, 1)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}
