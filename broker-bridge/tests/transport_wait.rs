//! Waiting for arrivals with `BLMOVE list list RIGHT RIGHT`: woken by a message on any consumed
//! list (priority lists too) without taking it, a `BRPOP` consumer on the same list (a Python
//! worker) still served, a user without `+blmove` told to poll, watchers that lose their
//! connections or see Redis restart connect again.

mod transport_support;

use std::time::Duration;

use celeriac_broker_bridge::transport::{ArrivalWait, Broker, TransportOptions, Woken};
use serde_json::json;
use transport_support::{celery_send, Env};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Wait as the fetch loop does, polling while the watchers (re)connect.
async fn settled_wait(w: &mut ArrivalWait, lists: &[String], limit: Duration) -> Woken {
    for _ in 0..1000 {
        match w.wait(lists, limit).await {
            Woken::Reconnecting | Woken::Connecting => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
    Woken::Reconnecting
}

/// [`settled_wait`] on watchers that have lost no connection: they may still be connecting,
/// never reconnecting (the fetch loop would take that for a new server and declare again).
async fn first_wait(w: &mut ArrivalWait, lists: &[String], limit: Duration) -> Woken {
    for _ in 0..1000 {
        match w.wait(lists, limit).await {
            Woken::Connecting => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    Woken::Connecting
}

#[tokio::test]
async fn a_message_on_a_priority_list_wakes_the_wait_and_stays_in_place() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let lists = env.broker.consumed_lists(&s(&["qa", "qb"]));
    assert_eq!(lists.len(), 8, "4 priority lists per queue: {lists:?}");
    let mut w = env.broker.arrival_wait_blocking(Duration::from_secs(1));
    assert_eq!(
        first_wait(&mut w, &lists, Duration::from_millis(2500)).await,
        Woken::TimedOut
    );
    assert_eq!(w.watched().len(), 8);

    let url = env.url.clone();
    let sender = tokio::task::spawn_blocking(move || {
        celery_send(&url, &json!({}), &json!([["t.a", "qb", 9, 1]]))
    });
    let woken = settled_wait(&mut w, &lists, Duration::from_secs(60)).await;
    sender.await??;
    assert_eq!(woken, Woken::Arrived);
    let high: Vec<Vec<u8>> = env.cmd(&[b"LRANGE", b"qb\x06\x169", b"0", b"-1"]).await?;
    assert_eq!(high.len(), 1, "the message is still in its list, once");
    let unacked: usize = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(unacked, 0, "waiting takes nothing");
    let f = env.broker.fetch(&s(&["qa", "qb"]), 10).await?;
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].raw, high[0]);

    // Already there before the wait is armed: woken at once.
    env.cmd::<()>(&[b"LPUSH", b"qa", b"x"]).await?;
    assert_eq!(
        settled_wait(&mut w, &lists, Duration::from_secs(60)).await,
        Woken::Arrived
    );

    // Watching fewer queues stops the other watchers.
    let only_a = env.broker.consumed_lists(&s(&["qa"]));
    assert_eq!(
        settled_wait(&mut w, &only_a, Duration::from_secs(60)).await,
        Woken::Arrived
    );
    let mut sorted = only_a.clone();
    sorted.sort();
    assert_eq!(w.watched(), sorted);
    Ok(())
}

/// Wait until Redis reports `n` blocked clients (an error after 60 s: they never blocked).
async fn blocked_clients(env: &Env, n: usize) -> anyhow::Result<()> {
    let want = format!("blocked_clients:{n}\r");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info: String = env.cmd(&[b"INFO", b"clients"]).await?;
        if info.contains(&want) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "never {n} blocked clients: {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_brpop_consumer_on_the_same_list_still_gets_the_message() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let lists = env.broker.consumed_lists(&s(&["q"]));
    let mut w = env.broker.arrival_wait_blocking(Duration::from_secs(30));
    // Watchers connected, then armed first: their BLMOVE is served before the BRPOP.
    assert_eq!(
        settled_wait(&mut w, &lists, Duration::from_millis(200)).await,
        Woken::TimedOut
    );
    // Every watcher blocked (one per priority list of `q`) before the BRPOP is sent, so theirs
    // come first on `q`, however the machine schedules the two connections.
    let watchers = lists.len();
    blocked_clients(&env, watchers).await?;
    let waiting = tokio::spawn(async move {
        let woken = w.wait(&lists, Duration::from_secs(60)).await;
        (woken, w)
    });
    let client = redis::Client::open(env.url.as_str())?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut kombu = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let brpop = tokio::spawn(async move {
        redis::cmd("BRPOP")
            .arg("q")
            .arg(30)
            .query_async::<Option<(String, String)>>(&mut kombu)
            .await
    });
    // The BRPOP blocked too before the push.
    blocked_clients(&env, watchers + 1).await?;
    env.cmd::<()>(&[b"LPUSH", b"q", b"m1"]).await?;
    let got = brpop.await??;
    assert_eq!(got, Some(("q".to_string(), "m1".to_string())));
    let (woken, _w) = waiting.await?;
    assert_eq!(woken, Woken::Arrived);
    let left: usize = env.cmd(&[b"LLEN", b"q"]).await?;
    assert_eq!(left, 0, "the message went to the BRPOP consumer only");
    Ok(())
}

#[tokio::test]
async fn a_user_without_blmove_is_told_to_poll() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    env.cmd::<()>(&[
        b"ACL", b"SETUSER", b"noblock", b"on", b">pw", b"~*", b"&*", b"+@all", b"-blmove",
    ])
    .await?;
    let url = format!("redis://noblock:pw@127.0.0.1:{}/0", env.server.port());
    let broker = Broker::connect(&url, TransportOptions::default()).await?;
    let lists = broker.consumed_lists(&s(&["q"]));
    let mut w = broker.arrival_wait_blocking(Duration::from_secs(1));
    let woken = settled_wait(&mut w, &lists, Duration::from_secs(30)).await;
    assert!(
        matches!(&woken, Woken::Unavailable(reason) if reason.contains("NOPERM") || reason.contains("permission")),
        "{woken:?}"
    );
    // For good: no blocking again.
    assert!(matches!(
        w.wait(&lists, Duration::from_secs(30)).await,
        Woken::Unavailable(_)
    ));
    Ok(())
}

#[tokio::test]
async fn watchers_connect_again_after_a_cut_and_a_restart() -> anyhow::Result<()> {
    let mut env = Env::start(json!({})).await?;
    let lists = env.broker.consumed_lists(&s(&["q"]));
    let mut w = env.broker.arrival_wait_blocking(Duration::from_secs(30));
    assert_eq!(
        settled_wait(&mut w, &lists, Duration::from_millis(200)).await,
        Woken::TimedOut
    );

    // Every connection cut while the watchers block.
    let url = env.url.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(std::time::Duration::from_secs(30))),
            )
            .await?;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async::<()>(&mut c)
            .await?;
        anyhow::Ok(())
    });
    assert_eq!(
        w.wait(&lists, Duration::from_secs(60)).await,
        Woken::Reconnecting
    );
    killer.await??;
    let mut raw = redis::Client::open(env.url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await?;
    redis::cmd("LPUSH")
        .arg("q\x06\x163")
        .arg("m")
        .query_async::<()>(&mut raw)
        .await?;
    assert_eq!(
        settled_wait(&mut w, &lists, Duration::from_secs(60)).await,
        Woken::Arrived
    );

    // Redis restarted (empty): the watchers follow it.
    env.server.restart()?;
    let mut raw = redis::Client::open(env.url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await?;
    redis::cmd("DEL")
        .arg("q\x06\x163")
        .query_async::<()>(&mut raw)
        .await?;
    let woken = settled_wait(&mut w, &lists, Duration::from_millis(500)).await;
    assert!(
        matches!(woken, Woken::TimedOut | Woken::Arrived),
        "{woken:?}"
    );
    redis::cmd("LPUSH")
        .arg("q")
        .arg("m2")
        .query_async::<()>(&mut raw)
        .await?;
    assert_eq!(
        settled_wait(&mut w, &lists, Duration::from_secs(60)).await,
        Woken::Arrived
    );
    Ok(())
}

/// A remote-control reply wait (mingle's, an inspect's) blocks on a connection of its own: the
/// broker's shared connection, which carries every fetch, ack and publish, keeps answering while
/// it waits (on the shared connection the `BRPOP` held them all up for its whole timeout, so a
/// worker took no message in the first second after its start).
#[tokio::test]
async fn a_reply_wait_does_not_hold_up_the_shared_connection() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let mut waiter = env.broker.list_waiter().await?;
    let waiting = tokio::spawn(async move { waiter.pop("reply.q", Duration::from_secs(60)).await });
    blocked_clients(&env, 1).await?;
    env.cmd::<()>(&[b"LPUSH", b"q", b"m1"]).await?;
    let fetched = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(fetched.deliveries.len() + fetched.dead_lettered.len(), 1);
    assert!(
        !waiting.is_finished(),
        "the fetch was answered while the reply wait still blocks"
    );
    env.cmd::<()>(&[b"LPUSH", b"reply.q", b"r1"]).await?;
    assert_eq!(waiting.await??, Some(b"r1".to_vec()));
    Ok(())
}
