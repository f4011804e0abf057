//! The transport against real Celery producers and real kombu consumers / restore sweeps.

mod transport_support;

use serde_json::{json, Value};
use transport_support::{celery_send, py, redelivered, task_id, Env};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `[task, queue, priority, arg]`: two queues, priorities in every bucket.
const SPECS: &str = r#"[["t.a", "qa", 0, 1], ["t.a", "qa", 5, 2], ["t.b", "qb", 0, 3],
    ["t.b", "qb", 9, 4], ["t.a", "qa", 0, 5], ["t.b", "qb", 3, 6], ["t.a", "qa", 7, 7],
    ["t.a", "qa", 2, 8], ["t.b", "qb", 6, 9], ["t.b", "qb", 0, 10]]"#;

/// A real kombu consumer of `qa`, `qb` (in that order), one message per BRPOP: the task
/// arguments in delivery order.
const KOMBU_CONSUME: &str = r#"
from kombu import Connection, Consumer, Queue
order = []
with Connection(URL, transport_options=OPTS) as conn:
    def on(body, message):
        order.append(body[0][0])
        message.ack()
    with Consumer(conn, [Queue("qa"), Queue("qb")], callbacks=[on], accept=["json"]):
        while len(order) < 10:
            conn.drain_events(timeout=5)
print(json.dumps(order))
"#;

fn arg_of(raw: &[u8]) -> i64 {
    use base64::Engine;
    let v: Value = serde_json::from_slice(raw).unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().unwrap())
        .unwrap();
    let b: Value = serde_json::from_slice(&body).unwrap();
    b[0][0].as_i64().unwrap()
}

#[tokio::test]
async fn fetch_order_matches_a_real_kombu_consumer() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let specs: Value = serde_json::from_str(SPECS)?;
    celery_send(&env.url, &json!({}), &specs)?;
    let kombu: Vec<i64> = serde_json::from_str(py(&env.url, &json!({}), KOMBU_CONSUME)?.trim())?;
    assert_eq!(kombu.len(), 10);

    celery_send(&env.url, &json!({}), &specs)?;
    let queues = s(&["qa", "qb"]);
    let mut ours = Vec::new();
    // Small batches, so the round-robin order has to carry over between calls.
    loop {
        let f = env.broker.fetch(&queues, 3).await?;
        if f.is_empty() {
            break;
        }
        assert!(f.dead_lettered.is_empty());
        ours.extend(f.deliveries);
    }
    let ours_args: Vec<i64> = ours.iter().map(|d| arg_of(&d.raw)).collect();
    assert_eq!(ours_args, kombu);
    // Priority 0 before 3 before 6 before 9 (inverted, coarse), across both queues.
    let steps: Vec<u8> = ours
        .iter()
        .map(|d| env.broker.keys().step_for(d.priority()))
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert_eq!(ours[0].priority(), 0);
    assert_eq!(ours.last().unwrap().priority(), 9);
    for d in &ours {
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("", d.queue.as_str())
        );
    }
    Ok(())
}

/// kombu `basic_get(no_ack=False)` of the only message in `q`, then death: prints the tag.
const KOMBU_GET: &str = r#"
from kombu import Connection
import os
conn = Connection(URL, transport_options=OPTS)
m = conn.default_channel.basic_get("q", no_ack=False)
print(m.delivery_tag, flush=True)
os._exit(0)  # die like a killed worker: a clean close would restore the message
"#;

#[tokio::test]
async fn unacked_entries_look_like_a_python_workers() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t.x", "q", 4, 42]]))?;
    let element: Vec<u8> = env.cmd(&[b"LINDEX", b"q\x06\x163", b"0"]).await?;
    let tag = py(&env.url, &json!({}), KOMBU_GET)?.trim().to_string();
    let kombu_value: Vec<u8> = env.cmd(&[b"HGET", b"unacked", tag.as_bytes()]).await?;
    let kombu_score: f64 = env
        .cmd(&[b"ZSCORE", b"unacked_index", tag.as_bytes()])
        .await?;

    // Put the very same element back and let celeriac take it.
    env.cmd::<()>(&[b"DEL", b"unacked", b"unacked_index"])
        .await?;
    env.cmd::<()>(&[b"RPUSH", b"q\x06\x163", &element]).await?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(f.deliveries.len(), 1);
    let d = &f.deliveries[0];
    assert_eq!(d.raw, element, "the element exactly as it was in the list");
    assert_eq!(d.delivery_tag, tag);
    assert_eq!(d.priority(), 4);
    let ours_value: Vec<u8> = env.cmd(&[b"HGET", b"unacked", tag.as_bytes()]).await?;
    let ours_score: f64 = env
        .cmd(&[b"ZSCORE", b"unacked_index", tag.as_bytes()])
        .await?;
    let a: Value = serde_json::from_slice(&kombu_value)?;
    let b: Value = serde_json::from_slice(&ours_value)?;
    assert_eq!(a, b, "same JSON value as kombu's QoS.append writes");
    assert!(ours_value.starts_with(b"["));
    assert!(
        (ours_score - kombu_score).abs() < 600.0,
        "{ours_score} vs {kombu_score}"
    );

    env.broker.ack(&tag).await?;
    let left: i64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    let left_index: i64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await?;
    assert_eq!((left, left_index), (0, 0));
    Ok(())
}

/// Real kombu's restore sweep (QoS.restore_visible) with the given visibility timeout.
const KOMBU_SWEEP: &str = r#"
from kombu import Connection
with Connection(URL, transport_options=OPTS) as conn:
    conn.default_channel.qos.restore_visible(num=None)
print("ok")
"#;

#[tokio::test]
async fn kombus_sweep_restores_what_we_hold_and_refresh_prevents_it() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 1], ["t", "q", 0, 2]]),
    )?;
    let f = env.broker.fetch(&s(&["q"]), 2).await?;
    let (d1, d2) = (&f.deliveries[0], &f.deliveries[1]);
    // Both look delivered 100 s ago; one is refreshed by its holder.
    for d in [d1, d2] {
        let old = format!("{}", chrono::Utc::now().timestamp() - 100);
        env.cmd::<()>(&[
            b"ZADD",
            b"unacked_index",
            old.as_bytes(),
            d.delivery_tag.as_bytes(),
        ])
        .await?;
    }
    assert_eq!(
        env.broker
            .refresh(std::slice::from_ref(&d2.delivery_tag))
            .await?,
        1
    );
    py(&env.url, &json!({"visibility_timeout": 30}), KOMBU_SWEEP)?;

    // d1 is back at the front with redelivered flags; d2 is still held.
    let held: Vec<String> = env.cmd(&[b"HKEYS", b"unacked"]).await?;
    assert_eq!(held, vec![d2.delivery_tag.clone()]);
    let again = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(again.deliveries.len(), 1);
    let r = &again.deliveries[0];
    assert_eq!(r.delivery_tag, d1.delivery_tag);
    assert_eq!(task_id(&r.raw), task_id(&d1.raw));
    assert!(redelivered(&r.raw));
    Ok(())
}

const KOMBU_GET_AND_DIE: &str = r#"
from kombu import Connection
import os
conn = Connection(URL, transport_options=OPTS)
m = conn.default_channel.basic_get("q", no_ack=False)
print(m.headers["id"], flush=True)
os._exit(0)  # die like a killed worker: a clean close would restore the message
"#;

#[tokio::test]
async fn our_sweep_restores_what_kombu_took() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t", "q", 6, 1]]))?;
    let id = py(&env.url, &json!({}), KOMBU_GET_AND_DIE)?
        .trim()
        .to_string();
    assert_eq!(
        env.broker.queue_lengths(&s(&["q"])).await?,
        vec![("q".to_string(), 0)]
    );

    // With the default 1 h timeout nothing is overdue.
    assert_eq!(env.broker.restore_visibility_timeouts().await?, 0);
    // A worker with a zero timeout restores it.
    let zero = celeriac_broker_bridge::transport::Broker::connect(
        &env.url,
        celeriac_broker_bridge::transport::TransportOptions::from_json(
            &json!({"visibility_timeout": 0}),
        )?,
    )
    .await?;
    // Not while another worker holds the sweep mutex.
    env.cmd::<()>(&[b"SET", b"unacked_mutex", b"someone-else"])
        .await?;
    assert_eq!(zero.restore_visibility_timeouts().await?, 0);
    env.cmd::<()>(&[b"DEL", b"unacked_mutex"]).await?;
    assert_eq!(zero.restore_visibility_timeouts().await?, 1);
    let mutex: Option<String> = env.cmd(&[b"GET", b"unacked_mutex"]).await?;
    assert_eq!(mutex, None, "the mutex is released");
    let held: i64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 0);
    let in_list: i64 = env.cmd(&[b"LLEN", b"q\x06\x166"]).await?;
    assert_eq!(in_list, 1, "restored to its priority list");

    let f = zero.fetch(&s(&["q"]), 10).await?;
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(task_id(&f.deliveries[0].raw), id);
    assert!(redelivered(&f.deliveries[0].raw));
    assert_eq!(f.deliveries[0].priority(), 6);
    Ok(())
}

/// A kombu SimpleQueue consumer of `pq`: prints task name, args, priority and routing key.
const KOMBU_SIMPLE_GET: &str = r#"
from kombu import Connection
with Connection(URL, transport_options=OPTS) as conn:
    q = conn.SimpleQueue("pq")
    m = q.get(timeout=5)
    print(json.dumps([m.headers["task"], m.payload[0], m.properties.get("priority"),
                      m.delivery_info["routing_key"], m.delivery_info["exchange"]]))
    m.ack()
    q.close()
"#;

#[tokio::test]
async fn what_we_publish_is_consumed_by_real_kombu() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t.pub", "src", 7, 99]]))?;
    let f = env.broker.fetch(&s(&["src"]), 1).await?;
    let d = &f.deliveries[0];
    let envelope = celeriac_broker_bridge::envelope::Envelope::parse(&d.raw)?;
    let published = env.broker.publish(&envelope, "", "pq").await?;
    assert_eq!(published.queues, s(&["pq"]));
    assert_ne!(published.delivery_tag, d.delivery_tag, "a fresh tag");
    env.broker.ack(&d.delivery_tag).await?;
    let in_list: i64 = env.cmd(&[b"LLEN", b"pq\x06\x166"]).await?;
    assert_eq!(in_list, 1, "priority 7 goes to the step-6 list");

    let got: Value = serde_json::from_str(py(&env.url, &json!({}), KOMBU_SIMPLE_GET)?.trim())?;
    assert_eq!(got, json!(["t.pub", [99], 7, "pq", ""]));
    Ok(())
}

#[tokio::test]
async fn publish_once_pushes_a_task_id_and_retries_once_and_kombu_reads_it() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t.pub", "src", 7, 99]]))?;
    let f = env.broker.fetch(&s(&["src"]), 1).await?;
    let d = &f.deliveries[0];
    let envelope = celeriac_broker_bridge::envelope::Envelope::parse(&d.raw)?;
    // The same publication repeated (say its first reply was lost): one copy queued.
    env.broker.publish_once(&envelope, "", "pq").await?;
    env.broker.publish_once(&envelope, "", "pq").await?;
    env.broker.ack(&d.delivery_tag).await?;
    let in_list: i64 = env.cmd(&[b"LLEN", b"pq\x06\x166"]).await?;
    assert_eq!(in_list, 1, "published once");
    let marker: i64 = env
        .cmd(&[
            b"EXISTS",
            format!("celeriac.published.{}.0", task_id(&d.raw)).as_bytes(),
        ])
        .await?;
    assert_eq!(marker, 1);
    let got: Value = serde_json::from_str(py(&env.url, &json!({}), KOMBU_SIMPLE_GET)?.trim())?;
    assert_eq!(got, json!(["t.pub", [99], 7, "pq", ""]));
    // The same id published by a replacement (one nesting deeper) is a new publication.
    let mut replaced = envelope.clone().into_value();
    replaced["headers"]["replaced_task_nesting"] = json!(1);
    let replaced = celeriac_broker_bridge::envelope::Envelope::from_value(replaced)?;
    env.broker.publish_once(&replaced, "", "pq").await?;
    env.broker.publish_once(&replaced, "", "pq").await?;
    let in_list: i64 = env.cmd(&[b"LLEN", b"pq\x06\x166"]).await?;
    assert_eq!(in_list, 1, "the replacement published once");
    // Within a run, once per run: another run publishing the same id queues it again.
    env.broker
        .publish_once_in(&envelope, "", "pq", Some("run-1"))
        .await?;
    env.broker
        .publish_once_in(&envelope, "", "pq", Some("run-1"))
        .await?;
    env.broker
        .publish_once_in(&envelope, "", "pq", Some("run-2"))
        .await?;
    let in_list: i64 = env.cmd(&[b"LLEN", b"pq\x06\x166"]).await?;
    assert_eq!(in_list, 3, "once for each of the two runs");
    Ok(())
}

#[tokio::test]
async fn publish_restored_keeps_the_delivery_tag_and_kombu_reads_it() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t.pub", "src", 7, 99]]))?;
    let f = env.broker.fetch(&s(&["src"]), 1).await?;
    let d = &f.deliveries[0];
    let mut envelope = celeriac_broker_bridge::envelope::Envelope::parse(&d.raw)?;
    envelope.mark_redelivered();
    env.broker.ack(&d.delivery_tag).await?;
    let restored = env.broker.publish_restored(&envelope, "", "pq").await?;
    assert_eq!(restored.delivery_tag, d.delivery_tag);
    let again = env.broker.fetch(&s(&["pq"]), 1).await?;
    assert_eq!(again.deliveries.len(), 1);
    assert_eq!(again.deliveries[0].delivery_tag, d.delivery_tag);
    env.broker.ack(&d.delivery_tag).await?;
    // A plain publish gives the message a fresh tag.
    let fresh = env.broker.publish(&envelope, "", "pq").await?;
    assert_ne!(fresh.delivery_tag, d.delivery_tag);
    let restored = env.broker.publish_restored(&envelope, "", "pq").await?;
    assert_eq!(restored.delivery_tag, d.delivery_tag);
    for _ in 0..2 {
        let got: Value = serde_json::from_str(py(&env.url, &json!({}), KOMBU_SIMPLE_GET)?.trim())?;
        assert_eq!(got, json!(["t.pub", [99], 7, "pq", ""]));
    }
    Ok(())
}

/// A Celery producer publishing through the named direct exchange `ex` with routing key `rk`
/// (no queue given, so it declares nothing itself).
const CELERY_NAMED_EXCHANGE: &str = r#"
from celery import Celery
app = Celery("producer", broker=URL)
app.conf.broker_transport_options = OPTS
app.send_task("t.routed", args=[5], exchange="ex", routing_key="rk", ignore_result=True)
print("sent")
"#;

/// kombu declaring `Queue("kq")` as a worker does; prints nothing.
const KOMBU_DECLARE: &str = r#"
from kombu import Connection, Exchange, Queue
with Connection(URL, transport_options=OPTS) as conn:
    Queue("kq", Exchange("kq"), routing_key="kq")(conn.default_channel).declare()
"#;

#[tokio::test]
async fn bindings_route_named_exchange_publishes_to_our_queue() -> anyhow::Result<()> {
    use celeriac_broker_bridge::transport::Binding;
    let env = Env::start(json!({})).await?;
    // Without the binding, kombu drops the message.
    py(&env.url, &json!({}), CELERY_NAMED_EXCHANGE)?;
    assert_eq!(env.broker.queue_lengths(&s(&["q"])).await?[0].1, 0);

    env.broker
        .declare_bindings(&[Binding {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            queue: "q".into(),
        }])
        .await?;
    py(&env.url, &json!({}), CELERY_NAMED_EXCHANGE)?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].exchange, "ex");
    assert_eq!(f.deliveries[0].routing_key, "rk");
    // A restore goes back through the binding table.
    assert_eq!(
        env.broker
            .restore(&[f.deliveries[0].delivery_tag.clone()])
            .await?,
        1
    );
    assert_eq!(env.broker.queue_lengths(&s(&["q"])).await?[0].1, 1);

    // declare_queues writes exactly what kombu 5.7 writes for a worker's queue.
    env.broker.declare_queues(&s(&["kq2"])).await?;
    py(&env.url, &json!({}), KOMBU_DECLARE)?;
    for (ours, theirs) in [
        (&b"_kombu.binding.kq2"[..], &b"_kombu.binding.kq"[..]),
        (
            b"_kombu.binding_permanent.kq2",
            b"_kombu.binding_permanent.kq",
        ),
    ] {
        let a: Vec<Vec<u8>> = env.cmd(&[b"SMEMBERS", ours]).await?;
        let b: Vec<Vec<u8>> = env.cmd(&[b"SMEMBERS", theirs]).await?;
        assert_eq!(a, vec![b"kq2\x06\x16\x06\x16kq2".to_vec()]);
        assert_eq!(b, vec![b"kq\x06\x16\x06\x16kq".to_vec()]);
    }
    Ok(())
}

#[tokio::test]
async fn global_keyprefix_is_shared_with_celery() -> anyhow::Result<()> {
    let opts = json!({"global_keyprefix": "app:"});
    let env = Env::start(opts.clone()).await?;
    celery_send(
        &env.url,
        &opts,
        &json!([["t", "q", 3, 1], ["t", "q", 0, 2]]),
    )?;
    let lens: i64 = env.cmd(&[b"LLEN", b"app:q\x06\x163"]).await?;
    assert_eq!(lens, 1);
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(f.deliveries.len(), 2);
    let held: i64 = env.cmd(&[b"HLEN", b"app:unacked"]).await?;
    let idx: i64 = env.cmd(&[b"ZCARD", b"app:unacked_index"]).await?;
    assert_eq!((held, idx), (2, 2));
    // Real kombu with the same prefix sweeps our entries (zero timeout).
    let sweep_opts = json!({"global_keyprefix": "app:", "visibility_timeout": 0});
    py(&env.url, &sweep_opts, KOMBU_SWEEP)?;
    assert_eq!(env.broker.queue_lengths(&s(&["q"])).await?[0].1, 2);
    env.broker.declare_queues(&s(&["q"])).await?;
    let members: Vec<Vec<u8>> = env.cmd(&[b"SMEMBERS", b"app:_kombu.binding.q"]).await?;
    assert_eq!(
        members,
        vec![b"q\x06\x16\x06\x16q".to_vec()],
        "member is not prefixed"
    );
    Ok(())
}
