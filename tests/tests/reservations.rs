//! Reservations: an early-acked message gives its reservation to the next message as soon as its
//! run is over, while its outcome is still being written; the outcomes waiting to be written are
//! bounded, so a result backend that stops answering stops the fetching too.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use celeriac_testkit::RedisServer;
use celeriac_tests::fault_proxy::FaultProxy;
use redis::Commands;
use support::{eventually, World};

fn received(w: &support::Proc) -> usize {
    w.log().matches("task received").count()
}

/// The stored metas of `ids`, in order.
fn metas(r: &mut redis::Connection, ids: &[&str]) -> Vec<Option<String>> {
    let keys: Vec<String> = ids
        .iter()
        .map(|id| format!("celery-task-meta-{id}"))
        .collect();
    r.mget(keys).unwrap()
}

#[test]
fn an_early_acked_run_passes_its_reservation_on_while_its_result_is_written() {
    let redis = RedisServer::start().expect("redis");
    let direct = redis.url(0);
    let proxy =
        FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port()))).expect("fault proxy");
    // The broker directly, the result backend through the proxy.
    let backend = proxy.url(0);
    let world = World::around(
        redis,
        direct.clone(),
        &[("CELERY_RESULT_BACKEND", backend.as_str())],
    );
    // One slot, prefetch multiplier 1: one reservation, so one recording permit.
    let w = world.celeriac("w1", &["-c", "1", "--prefetch-multiplier", "1"]);
    // From now on no result write gets an answer.
    proxy.freeze_all();
    let out = world.py(&format!(
        r#"
from celery_app import app
app.conf.result_backend = "{direct}"
print("\n".join(app.send_task("t.add", (i, 1)).id for i in range(3)))
"#
    ));
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 3, "{out}");

    // The first run is over and its result write hangs: its reservation went to the second
    // message, which runs and whose result write hangs too.
    eventually(Duration::from_secs(30), || {
        (received(&w) >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("a second message was not taken:\n{}", w.log()));
    // With both writes waiting, the recording budget (one) is spent and the second message
    // keeps its reservation: the third stays in Redis.
    std::thread::sleep(Duration::from_millis(1500));
    let mut r = world.redis();
    let waiting: u64 = r.llen("celery").unwrap();
    assert_eq!((received(&w), waiting), (2, 1), "{}", w.log());
    let stored = metas(&mut r, &ids);
    assert!(stored.iter().all(Option::is_none), "{stored:?}");

    // The backend's connection breaks and comes back: every outcome is written, nothing lost.
    proxy.cut_all();
    let all = eventually(Duration::from_secs(60), || {
        let metas = metas(&mut r, &ids);
        metas
            .iter()
            .all(|m| m.as_deref().is_some_and(|m| m.contains("SUCCESS")))
            .then_some(metas)
    });
    assert!(all.is_some(), "not every result was stored:\n{}", w.log());
    let (waiting, unacked): (u64, u64) = (r.llen("celery").unwrap(), r.hlen("unacked").unwrap());
    assert_eq!((waiting, unacked), (0, 0), "{}", w.log());
}
