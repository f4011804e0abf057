//! SQS as the broker, end to end, against moto's SQS emulator (not AWS): a real Python Celery
//! 5.7 producer on kombu's SQS transport with the Redis result backend; celeriac consumes from
//! SQS; results are read by Python. Mixed fleet with a Python worker on the same SQS queue;
//! SIGKILL mid-task with late acks → redelivered after the visibility timeout; what celeriac
//! cannot decode → celeriac's Redis dead-letter list (no redrive policy) or the queue's
//! dead-letter queue (redrive policy), body intact; a countdown longer than the visibility
//! timeout runs once (held messages are extended).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use celeriac_testkit::MotoServer;
use redis::Commands;
use support::scrape::{http_get, metrics_port};
use support::{eventually, World};

/// Short waits so the tests do not idle; a visibility timeout of `visibility` seconds.
fn sqs_world(moto: &MotoServer, visibility: u32, extra: &[(&str, &str)]) -> World {
    let opts = format!(
        r#"{{"region": "us-east-1", "is_secure": false, "wait_time_seconds": 1, "polling_interval": 0.1, "visibility_timeout": {visibility}}}"#
    );
    let url = moto.broker_url();
    let mut env = vec![
        ("CELERY_BROKER_URL", url.as_str()),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", opts.as_str()),
    ];
    env.extend_from_slice(extra);
    World::new(&env)
}

fn boto(moto: &MotoServer) -> String {
    format!(
        "import boto3\nc = boto3.client('sqs', region_name='us-east-1', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing')\n",
        moto.endpoint()
    )
}

#[test]
fn python_producer_celeriac_worker_results_read_by_python() {
    let moto = MotoServer::start().unwrap();
    let w = sqs_world(&moto, 30, &[]);
    let worker = w.celeriac("sqs", &[]);
    assert!(
        worker.log().contains("events and remote control are off"),
        "{}",
        worker.log()
    );
    let out = w.py(r#"
from celery_app import add, whoami
r = add.delay(2, 3)
print(r.get(timeout=60))
info = whoami.apply_async(queue="celery").get(timeout=60)
print(info["hostname"], info["queue"])
"#);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "5");
    assert_eq!(lines[1], "sqs@test celery");
    // Acked = deleted: nothing waiting, nothing in flight.
    let depth = w.py(&format!(
        "{}url = c.get_queue_url(QueueName='celery')['QueueUrl']\na = c.get_queue_attributes(QueueUrl=url, AttributeNames=['All'])['Attributes']\nprint(a['ApproximateNumberOfMessages'], a['ApproximateNumberOfMessagesNotVisible'])",
        boto(&moto)
    ));
    assert_eq!(depth.trim(), "0 0");
}

#[test]
fn mixed_fleet_python_and_celeriac_on_one_sqs_queue_run_each_task_once() {
    let moto = MotoServer::start().unwrap();
    let w = sqs_world(&moto, 30, &[]);
    let _python = w.python_worker("py", "celery");
    let _celeriac = w.celeriac("rs", &[]);
    let out = w.py(r#"
from celery_app import mark, whoami
from celery import group
marks = group(mark.s(50) for _ in range(20)).apply_async()
print(sorted(marks.get(timeout=120)) == [50] * 20)
hosts = group(whoami.s() for _ in range(20)).apply_async().get(timeout=120)
print(",".join(sorted({h["hostname"] for h in hosts})))
print(",".join(r.id for r in marks.results))
"#);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "True", "{out}");
    for host in lines[1].split(',') {
        assert!(["py@test", "rs@test"].contains(&host), "{out}");
    }
    let marks: HashMap<String, u64> = w.redis().hgetall("marks").unwrap();
    for id in lines[2].split(',') {
        assert_eq!(marks.get(id), Some(&1), "task {id} ran once: {marks:?}");
    }
}

#[test]
fn sigkill_mid_task_with_late_acks_is_redelivered_after_the_visibility_timeout() {
    let moto = MotoServer::start().unwrap();
    let w = sqs_world(&moto, 3, &[("CELERY_TASK_ACKS_LATE", "true")]);
    let mut first = w.celeriac("first", &[]);
    let id = w.py("from celery_app import mark\nprint(mark.delay(60000).id)");
    let id = id.trim().to_string();
    let mut redis = w.redis();
    eventually(Duration::from_secs(60), || {
        let n: Option<u64> = redis.hget("marks", &id).unwrap();
        (n == Some(1)).then_some(())
    })
    .expect("the task started on the first worker");
    first.kill9();
    let _second = w.celeriac("second", &[]);
    let n = eventually(Duration::from_secs(90), || {
        let n: Option<u64> = redis.hget("marks", &id).unwrap();
        n.filter(|n| *n >= 2)
    })
    .expect("the message came back after the visibility timeout and ran again");
    assert_eq!(n, 2);
}

#[test]
fn undecodable_messages_go_to_the_redis_dead_letter_list_or_the_redrive_dlq_intact() {
    let moto = MotoServer::start().unwrap();
    let w = sqs_world(&moto, 30, &[]);
    // A queue with a redrive policy (maxReceiveCount 2) and one without.
    w.py(&format!(
        r#"{}
import json
dlq = c.create_queue(QueueName="bad-dlq")["QueueUrl"]
arn = c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
red = c.create_queue(QueueName="redriven", Attributes={{"VisibilityTimeout": "30",
    "RedrivePolicy": json.dumps({{"deadLetterTargetArn": arn, "maxReceiveCount": "2"}})}})["QueueUrl"]
plain = c.create_queue(QueueName="celery", Attributes={{"VisibilityTimeout": "30"}})["QueueUrl"]
c.send_message(QueueUrl=plain, MessageBody="not a kombu message")
c.send_message(QueueUrl=red, MessageBody="bm90IGpzb24gZWl0aGVy")
"#,
        boto(&moto)
    ));
    let _worker = w.celeriac("dl", &["-Q", "celery,redriven"]);
    let mut redis = w.redis();
    let dead = eventually(Duration::from_secs(60), || {
        let d: Vec<String> = redis.lrange("celeriac.dead_letter", 0, -1).unwrap();
        (!d.is_empty()).then_some(d)
    })
    .expect("dead-lettered in Redis");
    assert_eq!(dead, vec!["not a kombu message".to_string()]);
    let reasons: HashMap<String, String> = redis.hgetall("celeriac.dead_letter.reasons").unwrap();
    let record: serde_json::Value =
        serde_json::from_str(reasons.values().next().expect("a reason")).unwrap();
    assert_eq!(record["queue"], "celery");
    let in_dlq = w.py(&format!(
        r#"{}
import time
dlq = c.get_queue_url(QueueName="bad-dlq")["QueueUrl"]
for _ in range(120):
    got = c.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    if got:
        print(got[0]["Body"])
        break
plain = c.get_queue_url(QueueName="celery")["QueueUrl"]
a = c.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
print(a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"])
"#,
        boto(&moto)
    ));
    let lines: Vec<&str> = in_dlq.lines().collect();
    assert_eq!(
        lines[0], "bm90IGpzb24gZWl0aGVy",
        "moved to the DLQ intact: {in_dlq}"
    );
    assert_eq!(lines[1], "0 0", "deleted from SQS once in the Redis list");
}

#[test]
fn a_countdown_longer_than_the_visibility_timeout_runs_once() {
    let moto = MotoServer::start().unwrap();
    // The message is held for 8 s on a queue whose visibility timeout is 3 s: only the
    // worker's visibility extension keeps SQS from delivering it again meanwhile.
    let w = sqs_world(&moto, 3, &[]);
    let _worker = w.celeriac("eta", &[]);
    let out = w.py(
        "from celery_app import mark\nr = mark.apply_async((10,), countdown=8)\nprint(r.get(timeout=60))\nprint(r.id)",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "10");
    let marks: HashMap<String, u64> = w.redis().hgetall("marks").unwrap();
    assert_eq!(marks.get(lines[1]), Some(&1), "ran once: {marks:?}");
    let depth = w.py(&format!(
        "{}url = c.get_queue_url(QueueName='celery')['QueueUrl']\na = c.get_queue_attributes(QueueUrl=url, AttributeNames=['All'])['Attributes']\nprint(a['ApproximateNumberOfMessages'], a['ApproximateNumberOfMessagesNotVisible'])",
        boto(&moto)
    ));
    assert_eq!(depth.trim(), "0 0", "no second copy left behind");
}

#[test]
fn keda_and_metrics_report_the_sqs_queue_depth() {
    let moto = MotoServer::start().unwrap();
    // Late acks: the running task's message stays in flight (not visible).
    let w = sqs_world(&moto, 30, &[("CELERY_TASK_ACKS_LATE", "true")]);
    // One slot, prefetch multiplier 1: the worker holds one message and leaves the rest waiting.
    let worker = w.celeriac(
        "depth",
        &[
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "--metrics-port",
            "0",
        ],
    );
    let port = metrics_port(&worker);
    w.py("from celery_app import sleep\nfor _ in range(5):\n    sleep.delay(600000)");
    let mut last = None;
    let keda = eventually(Duration::from_secs(60), || {
        let (status, body) = http_get(port, "/keda")?;
        last = Some(body.clone());
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["waiting"] == 4 && v["unacked"] == 1).then_some(v)
    })
    .unwrap_or_else(|| panic!("/keda shows 4 waiting and 1 in flight: {last:?}"));
    assert_eq!(keda["queue_depth"], 5);
    assert_eq!(keda["queues"]["celery"], 4);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains(r#"celeriac_unacked_messages{hostname="test"} 1"#)
            && metrics.contains(r#"celery_queue_length{queue_name="celery",hostname="test"} 4"#),
        "{metrics}"
    );
}
