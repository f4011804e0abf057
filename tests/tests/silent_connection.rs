//! A broker connection that goes silent (replies never come, the socket stays open: a peer or
//! middlebox dropping it without a reset) must not let a held message age past the visibility
//! timeout: the refresh that waits on it times out within a quarter of the visibility timeout,
//! the connection is replaced, the refresh is retried in time, and no sweep — here another
//! broker connected to Redis directly, as a Python worker would be — requeues the message.
//! Before this, a reply waited 60 s on the dead connection and the message ran twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use celeriac_testkit::RedisServer;
use celeriac_tests::fault_proxy::FaultProxy;
use celeriac_worker::__private::keepalive;
use redis::AsyncCommands;

const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(6);

fn message(tag: &str) -> String {
    serde_json::json!({
        "body": "W1tdLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "t.x", "id": format!("id-{tag}")},
        "properties": {
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": "q"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_mode": 2
        }
    })
    .to_string()
}

#[test]
fn a_silent_connection_does_not_let_a_held_message_be_requeued() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(held_through_a_silent_connection(&redis, &proxy))
}

async fn held_through_a_silent_connection(
    redis: &RedisServer,
    proxy: &FaultProxy,
) -> anyhow::Result<()> {
    let opts = TransportOptions {
        visibility_timeout: VISIBILITY_TIMEOUT,
        ..TransportOptions::default()
    };
    let holder = Broker::connect(&proxy.url(0), opts.clone()).await?;
    let sweeper = Broker::connect(&redis.url(0), opts).await?;
    let mut direct = redis::Client::open(redis.url(0))?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await?;
    let _: () = direct.lpush("q", message("tag-1")).await?;
    let fetched = holder.fetch(&["q".to_string()], 10).await?;
    assert_eq!(fetched.deliveries.len(), 1);
    let tag = fetched.deliveries[0].delivery_tag.clone();

    let stop = tokio_util::sync::CancellationToken::new();
    let refresher = {
        let (holder, tag, stop) = (holder.clone(), tag.clone(), stop.clone());
        tokio::spawn(async move {
            keepalive::keep_fresh(
                &holder,
                || vec![tag.clone()],
                keepalive::refresh_period(VISIBILITY_TIMEOUT),
                stop,
            )
            .await
        })
    };
    let restored = Arc::new(AtomicUsize::new(0));
    let sweeps = {
        let (restored, stop) = (restored.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(n) = sweeper.restore_visibility_timeouts().await {
                    restored.fetch_add(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.freeze_all();
    tokio::time::sleep(VISIBILITY_TIMEOUT * 3).await;
    stop.cancel();
    refresher.abort();
    let _ = sweeps.await;

    assert_eq!(
        restored.load(Ordering::Relaxed),
        0,
        "a sweep requeued the held message"
    );
    assert_eq!(holder.ack_many(std::slice::from_ref(&tag)).await?, 1);
    let queued: usize = direct.llen("q").await?;
    let held: usize = direct.hlen("unacked").await?;
    assert_eq!((queued, held), (0, 0));
    Ok(())
}
