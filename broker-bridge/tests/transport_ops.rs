//! Transport operations on a private Redis: dead-lettering of bad elements, requeue, restore,
//! dead_letter, move_to, and surviving a Redis restart.

mod transport_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use serde_json::{json, Value};
use transport_support::{celery_send, redelivered, task_id, Env};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn bad_elements_are_dead_lettered_intact_and_good_ones_fetched() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(&env.url, &json!({}), &json!([["t", "q", 0, 1]]))?;
    let bad: [&[u8]; 4] = [
        b"not json at all \xff",
        b"[1, 2, 3]",
        br#"{"body": "x", "properties": {"priority": 0}, "headers": {"task": "t.bad", "id": "id-1"}}"#,
        br#"{"body": "x", "properties": "nope"}"#,
    ];
    for b in bad {
        env.cmd::<()>(&[b"LPUSH", b"q", b]).await?;
    }
    celery_send(&env.url, &json!({}), &json!([["t", "q", 0, 2]]))?;

    let f = env.broker.fetch(&s(&["q"]), 100).await?;
    assert_eq!(f.deliveries.len(), 2);
    let reasons: Vec<&str> = f.dead_lettered.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "not JSON",
            "no properties object",
            "no delivery_tag",
            "no properties object"
        ]
    );
    assert!(f.dead_lettered.iter().all(|d| d.queue == "q"));
    let list: Vec<Vec<u8>> = env
        .cmd(&[b"LRANGE", b"celeriac.dead_letter", b"0", b"-1"])
        .await?;
    let mut expected: Vec<Vec<u8>> = bad.iter().map(|b| b.to_vec()).collect();
    expected.reverse();
    assert_eq!(list, expected, "intact, newest first (LPUSH)");
    let records: Vec<Vec<u8>> = env
        .cmd(&[b"HVALS", b"celeriac.dead_letter.reasons"])
        .await?;
    assert_eq!(records.len(), 4);
    let no_tag: Value = records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(r).unwrap())
        .find(|r| r["reason"] == "no delivery_tag")
        .unwrap();
    assert_eq!(no_tag["queue"], "q");
    assert_eq!(no_tag["task"], "t.bad");
    assert_eq!(no_tag["id"], "id-1");
    assert!(no_tag["at"].as_f64().unwrap() > 1.7e9);
    let held: i64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 2, "only the good messages are held");
    Ok(())
}

#[tokio::test]
async fn requeue_goes_to_the_back_restore_to_the_front() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let ids = celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 1], ["t", "q", 0, 2], ["t", "q", 0, 3]]),
    )?;
    let q = s(&["q"]);
    let first = env.broker.fetch(&q, 1).await?.deliveries.remove(0);
    assert_eq!(task_id(&first.raw), ids[0]);
    assert!(env.broker.requeue(&first).await?);
    assert!(!env.broker.requeue(&first).await?, "no longer held");
    let order: Vec<String> = env
        .broker
        .fetch(&q, 10)
        .await?
        .deliveries
        .iter()
        .map(|d| task_id(&d.raw))
        .collect();
    assert_eq!(order, [ids[1].clone(), ids[2].clone(), ids[0].clone()]);

    // Restore: the message is the next one popped, with redelivered flags.
    let more = celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 4], ["t", "q", 0, 5]]),
    )?;
    let d = env.broker.fetch(&q, 1).await?.deliveries.remove(0);
    assert_eq!(task_id(&d.raw), more[0]);
    let tags = vec![d.delivery_tag.clone(), "not-a-held-tag".to_string()];
    assert_eq!(env.broker.restore(&tags).await?, 1);
    assert_eq!(env.broker.restore(&tags).await?, 0, "never restored twice");
    let again = env.broker.fetch(&q, 1).await?.deliveries.remove(0);
    assert_eq!(task_id(&again.raw), more[0]);
    assert_eq!(again.delivery_tag, d.delivery_tag);
    assert!(redelivered(&again.raw));
    // Acked messages are never restored.
    env.broker.ack(&again.delivery_tag).await?;
    assert_eq!(
        env.broker
            .restore(std::slice::from_ref(&again.delivery_tag))
            .await?,
        0
    );
    assert_eq!(env.broker.get_unacked(&again.delivery_tag).await?, None);
    Ok(())
}

#[tokio::test]
async fn dead_letter_and_move_to_keep_the_element_unchanged() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let ids = celery_send(
        &env.url,
        &json!({}),
        &json!([["t.dead", "q", 0, 1], ["t.move", "q", 7, 2]]),
    )?;
    let f = env.broker.fetch(&s(&["q"]), 2).await?;
    let (dead, moved) = (&f.deliveries[0], &f.deliveries[1]);
    assert_eq!(
        env.broker.get_unacked(&dead.delivery_tag).await?,
        Some(dead.raw.clone())
    );

    assert!(env.broker.dead_letter(dead, "unknown task t.dead").await?);
    assert!(!env.broker.dead_letter(dead, "again").await?);
    let list: Vec<Vec<u8>> = env
        .cmd(&[b"LRANGE", b"celeriac.dead_letter", b"0", b"-1"])
        .await?;
    assert_eq!(list, vec![dead.raw.clone()]);
    let sha = sha1_hex(&dead.raw)?;
    let record: Vec<u8> = env
        .cmd(&[b"HGET", b"celeriac.dead_letter.reasons", sha.as_bytes()])
        .await?;
    let record: Value = serde_json::from_slice(&record)?;
    assert_eq!(record["reason"], "unknown task t.dead");
    assert_eq!(record["queue"], "q");
    assert_eq!(record["delivery_tag"], dead.delivery_tag.as_str());
    assert_eq!(record["task"], "t.dead");
    assert_eq!(record["id"], ids[0].as_str());
    assert_eq!(env.broker.get_unacked(&dead.delivery_tag).await?, None);

    assert!(env.broker.move_to(moved, "python_q", "no handler").await?);
    assert!(!env.broker.move_to(moved, "python_q", "again").await?);
    let in_list: Vec<Vec<u8>> = env
        .cmd(&[b"LRANGE", b"python_q\x06\x166", b"0", b"-1"])
        .await?;
    assert_eq!(
        in_list,
        vec![moved.raw.clone()],
        "unchanged, priority list kept"
    );
    let held: i64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 0);

    // Replay from the dead-letter list with LMOVE, then fetch it again.
    env.cmd::<()>(&[b"LMOVE", b"celeriac.dead_letter", b"q", b"RIGHT", b"LEFT"])
        .await?;
    let back = env.broker.fetch(&s(&["q"]), 1).await?.deliveries.remove(0);
    assert_eq!(back.raw, dead.raw);
    Ok(())
}

fn sha1_hex(data: &[u8]) -> anyhow::Result<String> {
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data)?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A redis-server on a given port, killed on drop.
struct Fixed {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Fixed {
    fn start(port: u16) -> anyhow::Result<Fixed> {
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Fixed { child, _dir: dir })
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn fetch_works_again_after_a_redis_restart() -> anyhow::Result<()> {
    let mut env = Env::start(json!({})).await?;
    let port = env.server.port();
    let q = s(&["q"]);
    celery_send(&env.url, &json!({}), &json!([["t", "q", 0, 1]]))?;
    assert_eq!(env.broker.fetch(&q, 10).await?.deliveries.len(), 1);

    env.server.kill();
    // While Redis is down, calls fail with an error (never hang, never panic).
    assert!(env.broker.fetch(&q, 10).await.is_err());
    let _new = Fixed::start(port)?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match env.broker.fetch(&q, 10).await {
            Ok(f) => {
                assert!(f.is_empty(), "a fresh server is empty");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The script cache was flushed by the restart: EVALSHA falls back to EVAL.
    celery_send(&env.url, &json!({}), &json!([["t", "q", 0, 2]]))?;
    let f = env.broker.fetch(&q, 10).await?;
    assert_eq!(f.deliveries.len(), 1);
    env.broker.ack(&f.deliveries[0].delivery_tag).await?;
    let other = Broker::connect(&env.url, TransportOptions::default()).await?;
    assert_eq!(other.queue_lengths(&q).await?, vec![("q".to_string(), 0)]);
    env.raw = redis::Client::open(env.url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await?;
    let held: i64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 0);
    Ok(())
}

#[tokio::test]
async fn ack_many_removes_every_tag_and_the_sweep_drops_orphan_index_entries() -> anyhow::Result<()>
{
    let env = Env::start(json!({"visibility_timeout": 1})).await?;
    celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 1], ["t", "q", 0, 2], ["t", "q", 0, 3]]),
    )?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    let tags: Vec<String> = f
        .deliveries
        .iter()
        .map(|d| d.delivery_tag.clone())
        .collect();
    assert_eq!(tags.len(), 3);
    assert_eq!(env.broker.ack_many(&tags[..2]).await?, 2);
    assert_eq!(env.broker.ack_many(&tags[..2]).await?, 0);
    let held: u64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    let indexed: u64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await?;
    assert_eq!((held, indexed), (1, 1));
    // An index entry whose hash entry is gone (an ack cut between its two commands).
    env.cmd::<()>(&[b"ZADD", b"unacked_index", b"1", b"orphan"])
        .await?;
    std::thread::sleep(Duration::from_millis(1200));
    let restored = env.broker.restore_visibility_timeouts().await?;
    assert_eq!(restored, 1, "the one still held comes back");
    let indexed: u64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await?;
    assert_eq!(indexed, 0, "the orphan is gone too");
    let queued: u64 = env.cmd(&[b"LLEN", b"q"]).await?;
    assert_eq!(queued, 1);
    Ok(())
}

#[tokio::test]
async fn depths_sum_priority_lists_and_count_unacked_in_one_call() -> anyhow::Result<()> {
    let env = Env::start(json!({"priority_steps": [0, 3, 6, 9]})).await?;
    celery_send(
        &env.url,
        &json!({"priority_steps": [0, 3, 6, 9]}),
        &json!([
            ["t", "q", 0, 1],
            ["t", "q", 4, 2],
            ["t", "q", 7, 3],
            ["t", "q", 9, 4],
            ["t", "q", 9, 5],
            ["t", "other", 0, 6]
        ]),
    )?;
    let d = env.broker.depths(&s(&["q", "other", "empty"])).await?;
    assert_eq!(
        d.queues,
        vec![("q".into(), 5), ("other".into(), 1), ("empty".into(), 0)]
    );
    assert_eq!((d.unacked, d.dead_letter, d.waiting()), (0, 0, 6));

    let f = env.broker.fetch(&s(&["q"]), 2).await?;
    assert_eq!(f.deliveries.len(), 2);
    env.cmd::<()>(&[b"LPUSH", b"q", b"not a message"]).await?;
    let bad = env.broker.fetch(&s(&["q"]), 1).await?;
    assert_eq!(bad.dead_lettered.len(), 1);
    let d = env.broker.depths(&s(&["q"])).await?;
    assert_eq!(d.queues, vec![("q".into(), 3)]);
    assert_eq!((d.unacked, d.dead_letter), (2, 1), "taken but not acked");
    env.broker.ack(&f.deliveries[0].delivery_tag).await?;
    let d = env.broker.depths(&s(&["q"])).await?;
    assert_eq!(d.unacked, 1);
    Ok(())
}

/// An `unacked` value as kombu writes it: `[message, exchange, routing_key]`, the message's
/// `eta` header given (`Some`) or null; `compact` writes it without spaces, as cjson does.
fn unacked_value(routing_key: &str, eta: Option<&str>, compact: bool) -> String {
    let eta = eta.map_or("null".to_string(), |e| format!("\"{e}\""));
    let value = format!(
        r#"[{{"body": "e30=", "headers": {{"id": "x", "task": "t", "eta": {eta}, "expires": null}}, "properties": {{"delivery_tag": "d", "delivery_info": {{"exchange": "", "routing_key": "{routing_key}"}}}}}}, "", "{routing_key}"]"#
    );
    if compact {
        value.replace(": ", ":").replace(", ", ",")
    } else {
        value
    }
}

#[tokio::test]
async fn unacked_depth_counts_the_asked_queues_and_sets_future_etas_apart() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    let minus5 = chrono::FixedOffset::west_opt(5 * 3600).unwrap();
    let plus5 = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    // In an hour, written in New York's offset: future. An hour ago, written at +05:30: past.
    let future_local = (now + hour).with_timezone(&minus5).to_rfc3339();
    let past_local = (now - hour).with_timezone(&plus5).to_rfc3339();
    let entries = [
        ("1", unacked_value("q", None, false)),
        (
            "2",
            unacked_value("q", Some("2000-01-01T00:00:00+00:00"), false),
        ),
        (
            "3",
            unacked_value("q", Some("2999-01-01T00:00:00.123456+00:00"), false),
        ),
        ("4", unacked_value("q", Some(&future_local), false)),
        ("5", unacked_value("q", Some(&past_local), false)),
        ("6", unacked_value("q", Some("2999-01-01T00:00:00Z"), true)),
        ("7", unacked_value("q", Some("2999-01-01T00:00:00"), true)),
        (
            "8",
            unacked_value("other", Some("2999-01-01T00:00:00+00:00"), false),
        ),
        ("9", unacked_value("other", None, false)),
        ("10", unacked_value("elsewhere", None, false)),
    ];
    for (tag, value) in &entries {
        env.cmd::<()>(&[b"HSET", b"unacked", tag.as_bytes(), value.as_bytes()])
            .await?;
    }
    let d = env.broker.depths(&s(&["q"])).await?;
    // Held: no eta (1), past etas (2, 5). ETA-held: 3, 4, 6, 7 (naive read as UTC).
    assert_eq!((d.unacked, d.eta_held), (3, 4));
    let d = env.broker.depths(&s(&["q", "other"])).await?;
    assert_eq!((d.unacked, d.eta_held), (4, 5));
    let d = env.broker.depths(&s(&["none"])).await?;
    assert_eq!((d.unacked, d.eta_held), (0, 0));
    Ok(())
}

#[tokio::test]
async fn fetch_takes_the_delivery_tag_of_the_top_level_properties_only() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let info = r#""delivery_info": {"exchange": "", "routing_key": "q"}"#;
    let elements = [
        // A `properties` object nested in the headers, after the real one.
        format!(
            r#"{{"body": "x", "properties": {{"delivery_tag": "real-1", {info}}}, "headers": {{"properties": {{"delivery_tag": "fake"}}}}}}"#
        ),
        // The text `"properties": {...}` inside a header string.
        format!(
            r#"{{"headers": {{"note": "\"properties\": {{\"delivery_tag\": \"fake\"}}"}}, "body": "x", "properties": {{"delivery_tag": "real-2", {info}}}}}"#
        ),
        // A nested `properties` as the last member of the envelope.
        format!(
            r#"{{"body": "x", "properties": {{"delivery_tag": "real-3", {info}}}, "extra": {{"properties": {{"delivery_tag": "fake"}}}}}}"#
        ),
        // Compact JSON, properties last (as kombu writes it, without spaces).
        format!(
            r#"{{"body":"x","headers":{{}},"properties":{{"priority":0,"delivery_tag":"real-4",{info}}}}}"#
        ),
        // A last member whose name ends in `properties`.
        format!(
            r#"{{"body": "x", "properties": {{"delivery_tag": "real-5", {info}}}, "xproperties": {{"delivery_tag": "fake"}}}}"#
        ),
        // Properties last, after a member whose name ends in `properties`.
        format!(
            r#"{{"body": "x", "myproperties": {{"delivery_tag": "fake"}}, "properties": {{"delivery_tag": "real-6", {info}}}}}"#
        ),
    ];
    for e in &elements {
        env.cmd::<()>(&[b"LPUSH", b"q", e.as_bytes()]).await?;
    }
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert!(f.dead_lettered.is_empty(), "{:?}", f.dead_lettered);
    let tags: Vec<&str> = f
        .deliveries
        .iter()
        .map(|d| d.delivery_tag.as_str())
        .collect();
    assert_eq!(
        tags,
        ["real-1", "real-2", "real-3", "real-4", "real-5", "real-6"]
    );
    for (d, e) in f.deliveries.iter().zip(&elements) {
        assert_eq!(d.raw, e.as_bytes(), "delivered intact");
        assert_eq!((d.exchange.as_str(), d.routing_key.as_str()), ("", "q"));
        let stored: Vec<u8> = env
            .cmd(&[b"HGET", b"unacked", d.delivery_tag.as_bytes()])
            .await?;
        assert_eq!(stored, format!(r#"[{e}, "", "q"]"#).into_bytes());
        let score: Option<f64> = env
            .cmd(&[b"ZSCORE", b"unacked_index", d.delivery_tag.as_bytes()])
            .await?;
        assert!(score.is_some(), "indexed");
    }
    let fake: bool = env.cmd(&[b"HEXISTS", b"unacked", b"fake"]).await?;
    assert!(!fake);
    Ok(())
}

/// A command that fails after elements were popped (a wrong type, a missing permission) undoes
/// the fetch: the script's earlier writes survive a failure in Redis, so without the undo the
/// popped elements would be in no list and no record.
#[tokio::test]
async fn a_fetch_that_fails_after_popping_puts_everything_back() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 1], ["t", "q", 0, 2]]),
    )?;
    env.cmd::<()>(&[b"LPUSH", b"q", b"not json"]).await?;
    celery_send(
        &env.url,
        &json!({}),
        &json!([["t", "q", 0, 3], ["t", "p", 0, 4]]),
    )?;
    let before: Vec<Vec<u8>> = env.cmd(&[b"LRANGE", b"q", b"0", b"-1"]).await?;
    assert_eq!(before.len(), 4);
    let unchanged = |what: &'static str| {
        let before = before.clone();
        let env = &env;
        async move {
            let now: Vec<Vec<u8>> = env.cmd(&[b"LRANGE", b"q", b"0", b"-1"]).await?;
            assert_eq!(now, before, "{what}: the queue is as it was, in order");
            let held: i64 = env.cmd(&[b"HLEN", b"unacked"]).await.unwrap_or(0);
            let index: i64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await.unwrap_or(0);
            assert_eq!((held, index), (0, 0), "{what}: no record left");
            anyhow::Ok(())
        }
    };

    // The unacked hash is of the wrong type: recording fails after the pops.
    env.cmd::<()>(&[b"SET", b"unacked", b"x"]).await?;
    let e = env.broker.fetch(&s(&["q"]), 10).await.unwrap_err();
    assert!(e.to_string().contains("fetch undone"), "{e}");
    env.cmd::<()>(&[b"DEL", b"unacked"]).await?;
    unchanged("unacked of a wrong type").await?;

    // The dead-letter list is of the wrong type: the bad element cannot be dead-lettered.
    env.cmd::<()>(&[b"SET", b"celeriac.dead_letter", b"x"])
        .await?;
    let e = env.broker.fetch(&s(&["q"]), 10).await.unwrap_err();
    assert!(e.to_string().contains("fetch undone"), "{e}");
    unchanged("dead-letter list of a wrong type").await?;
    env.cmd::<()>(&[b"DEL", b"celeriac.dead_letter"]).await?;

    // A later queue of the wrong type: popping stops there and the earlier pops are undone.
    env.cmd::<()>(&[b"SET", b"z", b"x"]).await?;
    let e = env.broker.fetch(&s(&["q", "z"]), 10).await.unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    unchanged("a queue of a wrong type").await?;
    let p: i64 = env.cmd(&[b"LLEN", b"p"]).await?;
    assert_eq!(p, 1);

    // Repaired: everything is taken as usual.
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!((f.deliveries.len(), f.dead_lettered.len()), (3, 1));
    Ok(())
}

#[tokio::test]
async fn a_fetch_within_a_byte_room_takes_until_it_is_filled_and_leaves_the_rest_in_order(
) -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let ids = celery_send(
        &env.url,
        &json!({}),
        &json!([
            ["t", "q", 0, 1],
            ["t", "q", 0, 2],
            ["t", "q", 0, 3],
            ["t", "q", 0, 4],
            ["t", "q", 0, 5]
        ]),
    )?;
    let before: Vec<Vec<u8>> = env.cmd(&[b"LRANGE", b"q", b"0", b"-1"]).await?;
    let room = before[0].len() * 5 / 2;
    let f = env.broker.fetch_within(&s(&["q"]), 10, room).await?;
    let taken: Vec<String> = f.deliveries.iter().map(|d| task_id(&d.raw)).collect();
    assert_eq!(taken, ids[..3], "three fill the room of two and a half");
    let after: Vec<Vec<u8>> = env.cmd(&[b"LRANGE", b"q", b"0", b"-1"]).await?;
    assert_eq!(
        after,
        before[..2],
        "the rest is back where it was, in order"
    );
    let held: u64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 3);
    let one = env.broker.fetch_within(&s(&["q"]), 10, 1).await?;
    assert_eq!(one.deliveries.len(), 1, "the first is always taken");
    Ok(())
}

#[tokio::test]
async fn a_delivery_tag_that_is_not_utf8_is_dead_lettered_intact() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let bad: &[u8] = b"{\"body\": \"e30=\", \"headers\": {\"task\": \"t\", \"id\": \"id-1\"}, \"properties\": {\"delivery_tag\": \"ta\xff-1\", \"body_encoding\": \"base64\"}}";
    env.cmd::<()>(&[b"LPUSH", b"q", bad]).await?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert!(f.deliveries.is_empty());
    let reasons: Vec<&str> = f.dead_lettered.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["delivery_tag is not valid UTF-8"]);
    let dead: Vec<Vec<u8>> = env
        .cmd(&[b"LRANGE", b"celeriac.dead_letter", b"0", b"-1"])
        .await?;
    assert_eq!(dead, [bad.to_vec()]);
    let held: u64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    assert_eq!(held, 0);
    Ok(())
}

/// One `unacked` record per delivery tag: an element whose tag another message already holds
/// (earlier in the same fetch, or in `unacked` from an earlier one) is dead-lettered intact
/// instead of overwriting that message's record; the same element twice (one publish routed to
/// two queues) shares its record, as under kombu.
#[tokio::test]
async fn an_element_whose_delivery_tag_is_held_by_another_message_is_dead_lettered(
) -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let element = |id: &str| {
        format!(
            r#"{{"body": "e30=", "headers": {{"task": "t", "id": "{id}"}}, "properties": {{"delivery_tag": "dup", "body_encoding": "base64", "delivery_info": {{"exchange": "", "routing_key": "q"}}}}}}"#
        )
        .into_bytes()
    };
    let (a, b, c) = (element("a"), element("b"), element("c"));
    for e in [&a, &b, &a] {
        env.cmd::<()>(&[b"LPUSH", b"q", e]).await?;
    }
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    let taken: Vec<&[u8]> = f.deliveries.iter().map(|d| d.raw.as_slice()).collect();
    assert_eq!(taken, [a.as_slice(), a.as_slice()], "a, and a again");
    let reasons: Vec<&str> = f.dead_lettered.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["delivery_tag is already held by another message"]);
    let stored: Vec<u8> = env.cmd(&[b"HGET", b"unacked", b"dup"]).await?;
    assert_eq!(
        stored,
        [b"[".as_slice(), &a, br#", "", "q"]"#].concat(),
        "a's record"
    );

    // Held from the earlier fetch: refused too, until it is settled.
    env.cmd::<()>(&[b"LPUSH", b"q", &c]).await?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert!(f.deliveries.is_empty());
    assert_eq!(f.dead_lettered.len(), 1);
    let dead: Vec<Vec<u8>> = env
        .cmd(&[b"LRANGE", b"celeriac.dead_letter", b"0", b"-1"])
        .await?;
    assert_eq!(dead, [c.clone(), b.clone()], "intact, newest first");
    let records: Vec<String> = env
        .cmd(&[b"HVALS", b"celeriac.dead_letter.reasons"])
        .await?;
    assert!(
        records
            .iter()
            .all(|r| r.contains(r#""delivery_tag":"dup""#)),
        "{records:?}"
    );
    env.broker.ack("dup").await?;
    env.cmd::<()>(&[b"LPUSH", b"q", &c]).await?;
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    assert_eq!(f.deliveries.len(), 1, "taken once the tag is free");
    Ok(())
}

/// `calls` of each command in `INFO commandstats` (commands run inside scripts included).
async fn command_calls(env: &Env) -> anyhow::Result<Vec<(String, u64)>> {
    let info: String = env.cmd(&[b"INFO", b"commandstats"]).await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !["info", "config"].contains(&name.as_str()))
        .collect())
}

/// A fetch's Redis commands do not grow with the messages it takes: the check that no other
/// message holds a tag is one `ZADD NX` for the whole fetch, not one `HGET` a message (which
/// took a third of a drain's commands). A tag found in the index is still checked against its
/// record: here one held tag among fresh ones is dead-lettered, the others are taken.
#[tokio::test]
async fn a_fetch_checks_its_delivery_tags_without_a_command_per_message() -> anyhow::Result<()> {
    let env = Env::start(json!({})).await?;
    let element = |id: &str, tag: &str| {
        format!(
            r#"{{"body": "e30=", "headers": {{"task": "t", "id": "{id}"}}, "properties": {{"delivery_tag": "{tag}", "body_encoding": "base64", "delivery_info": {{"exchange": "", "routing_key": "q"}}}}}}"#
        )
        .into_bytes()
    };
    for i in 0..400 {
        let e = element(&format!("id-{i}"), &format!("tag-{i}"));
        env.cmd::<()>(&[b"LPUSH", b"q", &e]).await?;
    }
    env.cmd::<()>(&[b"CONFIG", b"RESETSTAT"]).await?;
    let f = env.broker.fetch(&s(&["q"]), 400).await?;
    assert_eq!(f.deliveries.len(), 400);
    let calls = command_calls(&env).await?;
    let total: u64 = calls.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 12 && !calls.iter().any(|(name, _)| name == "hget"),
        "{calls:?}"
    );
    let held: u64 = env.cmd(&[b"HLEN", b"unacked"]).await?;
    let indexed: u64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await?;
    assert_eq!((held, indexed), (400, 400));

    let before: Vec<u8> = env.cmd(&[b"HGET", b"unacked", b"tag-7"]).await?;
    for (id, tag) in [
        ("new-1", "tag-new-1"),
        ("other", "tag-7"),
        ("new-2", "tag-new-2"),
    ] {
        env.cmd::<()>(&[b"LPUSH", b"q", &element(id, tag)]).await?;
    }
    let f = env.broker.fetch(&s(&["q"]), 10).await?;
    let taken: Vec<String> = f.deliveries.iter().map(|d| task_id(&d.raw)).collect();
    assert_eq!(taken, ["new-1", "new-2"]);
    let reasons: Vec<&str> = f.dead_lettered.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["delivery_tag is already held by another message"]);
    let after: Vec<u8> = env.cmd(&[b"HGET", b"unacked", b"tag-7"]).await?;
    assert_eq!(after, before, "the holder keeps its record");
    let indexed: u64 = env.cmd(&[b"ZCARD", b"unacked_index"]).await?;
    assert_eq!(indexed, 402);
    Ok(())
}
