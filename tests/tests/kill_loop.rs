//! SIGKILL celeriac again and again while 10 000 tasks flow: with late acks, every task id still
//! ends with a result.

mod support;

use std::time::{Duration, Instant};

use redis::Commands;
use support::World;

#[test]
fn repeated_sigkill_loses_no_task() {
    let world = World::new(&[
        (
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            r#"{"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}"#,
        ),
        ("CELERY_TASK_ACKS_LATE", "true"),
    ]);
    const N: usize = 10_000;
    let ids = world.py(&format!(
        r#"
from celery_app import app
with app.producer_or_acquire() as producer:
    ids = [app.send_task("t.mark", args=(1,), producer=producer).id for _ in range({N})]
print("\n".join(ids))
"#
    ));
    let ids: Vec<String> = ids.lines().map(String::from).collect();
    assert_eq!(ids.len(), N);
    let mut redis = world.redis();
    let done = |redis: &mut redis::Connection| -> usize {
        let keys: Vec<String> = ids
            .iter()
            .map(|i| format!("celery-task-meta-{i}"))
            .collect();
        keys.chunks(1000)
            .map(|c| {
                let found: Vec<Option<String>> = redis.mget(c).unwrap();
                found
                    .iter()
                    .filter(|v| v.as_deref().is_some_and(|s| s.contains("SUCCESS")))
                    .count()
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    let mut round = 0u64;
    while done(&mut redis) < N && Instant::now() < deadline {
        let mut w = world.celeriac(&format!("w{round}"), &["-c", "8"]);
        // Kill after a varying fraction of a second, mid-flight.
        std::thread::sleep(Duration::from_millis(300 + (round * 137) % 700));
        if kills < 8 {
            w.kill9();
            kills += 1;
        } else {
            // Last round: let it drain; restored messages return after the visibility timeout.
            let _ = support::eventually(Duration::from_secs(120), || {
                (done(&mut redis) == N).then_some(())
            });
            w.signal("TERM");
            let _ = w.wait_exit(Duration::from_secs(30));
        }
        round += 1;
    }
    let finished = done(&mut redis);
    let state: (u64, u64, u64, i64, u64) = redis::pipe()
        .llen("celery")
        .hlen("unacked")
        .zcard("unacked_index")
        .pttl("unacked_mutex")
        .llen("celeriac.dead_letter")
        .query(&mut redis)
        .unwrap();
    eprintln!(
        "kills: {kills}, rounds: {round}, finished: {finished}/{N}; queue {}, unacked {}, unacked_index {}, mutex pttl {}, dead-lettered {}",
        state.0, state.1, state.2, state.3, state.4
    );
    assert_eq!(finished, N, "tasks lost");
    assert!(kills >= 8);
}
