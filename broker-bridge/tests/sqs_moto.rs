//! celeriac's SQS transport against moto's SQS emulator, with real Celery 5.7 / kombu 5.7 on the
//! other side: what a Python producer sends is received, acked (deleted), requeued (visibility
//! 0) and counted; what celeriac sends is what kombu's consumer decodes; bodies that are not
//! kombu envelopes come back intact.

use celeriac_broker_bridge::codec::{decode, DecodeOptions};
use celeriac_broker_bridge::sqs::{QueueDepth, SqsBroker, SqsOptions};
use celeriac_testkit::{run_python, MotoServer};
use serde_json::{json, Value};

/// A Celery app on the emulator (transport options from `SQS_OPTIONS`), and helpers.
const PRELUDE: &str = r#"
import json, os, sys
import boto3
from celery import Celery
opts = json.loads(os.environ["SQS_OPTIONS"])
app = Celery("t", broker=os.environ["BROKER"], set_as_current=False)
app.conf.broker_transport_options = opts
app.conf.broker_connection_retry_on_startup = True
@app.task(name="tasks.add", shared=False)
def add(x, y):
    return x + y
def boto():
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=os.environ["ENDPOINT"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")
"#;

fn py(moto: &MotoServer, opts: &Value, code: &str) -> String {
    let script = format!("{PRELUDE}\n{code}");
    run_python(
        &script,
        &[],
        &[
            ("BROKER", &moto.broker_url()),
            ("ENDPOINT", &moto.endpoint()),
            ("SQS_OPTIONS", &opts.to_string()),
        ],
    )
    .unwrap()
}

async fn broker(moto: &MotoServer, opts: &Value) -> SqsBroker {
    let o = SqsOptions::from_map(opts.as_object().unwrap()).unwrap();
    SqsBroker::connect(&moto.broker_url(), o).await.unwrap()
}

fn options() -> Value {
    // Short waits keep empty polls quick; kombu's defaults otherwise.
    json!({"region": "us-east-1", "is_secure": false, "wait_time_seconds": 1,
           "visibility_timeout": 30})
}

#[tokio::test]
async fn python_producer_to_celeriac_receive_ack_requeue_and_depth() {
    let moto = MotoServer::start().unwrap();
    let opts = options();
    let id = py(&moto, &opts, "print(add.delay(2, 3).id)");
    let id = id.trim();
    let sqs = broker(&moto, &opts).await;
    assert_eq!(
        sqs.depth("celery").await.unwrap(),
        QueueDepth {
            visible: 1,
            not_visible: 0
        }
    );

    let got = sqs.receive("celery", 10, None).await.unwrap();
    assert!(got.undecodable.is_empty());
    assert_eq!(got.deliveries.len(), 1);
    let d = &got.deliveries[0];
    assert_eq!(d.receive_count, Some(1));
    let msg = decode(d.envelope_json.as_bytes(), &DecodeOptions::default()).unwrap();
    assert_eq!(msg.task, "tasks.add");
    assert_eq!(msg.id, id);
    assert_eq!(msg.args, vec![json!(2), json!(3)]);
    let delivery = d.to_delivery();
    assert_eq!(delivery.delivery_tag, d.receipt_handle);
    assert_eq!(
        (delivery.exchange.as_str(), delivery.routing_key.as_str()),
        ("", "celery")
    );
    assert_eq!(
        sqs.depth("celery").await.unwrap(),
        QueueDepth {
            visible: 0,
            not_visible: 1
        }
    );

    // Requeue: visible again at once, the same message, received a second time.
    sqs.requeue("celery", &d.receipt_handle).await.unwrap();
    let again = sqs.receive("celery", 10, None).await.unwrap();
    assert_eq!(again.deliveries.len(), 1);
    let d2 = &again.deliveries[0];
    assert_eq!(d2.message_id, d.message_id);
    assert_eq!(d2.receive_count, Some(2));
    assert_eq!(d2.envelope_json, d.envelope_json);

    // Ack: deleted; nothing left in flight or waiting.
    sqs.ack("celery", &d2.receipt_handle).await.unwrap();
    assert_eq!(sqs.depth("celery").await.unwrap(), QueueDepth::default());
    assert!(sqs
        .receive("celery", 10, Some(0))
        .await
        .unwrap()
        .deliveries
        .is_empty());
}

#[tokio::test]
async fn celeriac_send_is_what_kombus_consumer_decodes() {
    let moto = MotoServer::start().unwrap();
    // A prefix and a queue name with a dot: both sides must agree on the SQS name.
    let mut opts = options();
    opts["queue_name_prefix"] = json!("app-");
    py(
        &moto,
        &opts,
        "add.apply_async((20, 22), queue='work.high', countdown=5)",
    );
    let sqs = broker(&moto, &opts).await;
    let got = sqs.receive("work.high", 1, None).await.unwrap();
    let d = &got.deliveries[0];
    // Re-publish the envelope (as a retry or canvas publish does) to another queue.
    let message_id = sqs.send(&d.envelope, "", "work.low").await.unwrap();
    assert!(!message_id.is_empty());
    sqs.ack("work.high", &d.receipt_handle).await.unwrap();

    let seen = py(
        &moto,
        &opts,
        r#"
urls = boto().list_queues()["QueueUrls"]
with app.connection_for_read() as conn:
    q = conn.SimpleQueue("work.low", no_ack=False)
    m = q.get(timeout=10)
    print(json.dumps({"urls": sorted(u.rsplit("/", 1)[1] for u in urls),
                      "headers": m.headers, "body": m.decode(),
                      "delivery_info": {k: v for k, v in m.delivery_info.items()
                                        if k in ("exchange", "routing_key")},
                      "content_type": m.content_type}))
    m.ack()
"#,
    );
    let seen: Value = serde_json::from_str(seen.trim()).unwrap();
    assert_eq!(seen["urls"], json!(["app-work-high", "app-work-low"]));
    assert_eq!(seen["headers"]["task"], "tasks.add");
    assert_eq!(seen["headers"]["id"], d.envelope.headers().unwrap()["id"]);
    assert_eq!(seen["body"][0], json!([20, 22]));
    assert_eq!(
        seen["delivery_info"],
        json!({"exchange": "", "routing_key": "work.low"})
    );
    assert_eq!(seen["content_type"], "application/json");
}

#[tokio::test]
async fn bodies_that_are_not_kombu_envelopes_come_back_intact() {
    let moto = MotoServer::start().unwrap();
    let opts = options();
    let sqs = broker(&moto, &opts).await;
    sqs.queue_url("celery").await.unwrap();
    py(
        &moto,
        &opts,
        r#"
c = boto()
url = c.get_queue_url(QueueName="celery")["QueueUrl"]
for body in ["not json at all", "eyJib2R5IjogMX0=", "[1, 2]"]:
    c.send_message(QueueUrl=url, MessageBody=body)
"#,
    );
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let got = sqs.receive("celery", 10, Some(1)).await.unwrap();
        assert!(got.deliveries.is_empty());
        bodies.extend(got.undecodable.into_iter().map(|u| {
            assert!(!u.reason.is_empty());
            u.body
        }));
        if bodies.len() == 3 {
            break;
        }
    }
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["[1, 2]", "eyJib2R5IjogMX0=", "not json at all"],
        "the bodies exactly as sent"
    );
}

#[tokio::test]
async fn predefined_queues_are_used_and_nothing_else_is_created() {
    let moto = MotoServer::start().unwrap();
    let opts = options();
    let url = py(
        &moto,
        &opts,
        r#"print(boto().create_queue(QueueName="jobs-prod")["QueueUrl"])"#,
    );
    let mut opts = options();
    opts["predefined_queues"] = json!({"celery": {"url": url.trim()}});
    py(&moto, &opts, "add.delay(1, 1)");
    let sqs = broker(&moto, &opts).await;
    let got = sqs.receive("celery", 10, None).await.unwrap();
    assert_eq!(
        got.deliveries.len(),
        1,
        "received through the predefined URL"
    );
    let err = sqs.queue_url("other").await.unwrap_err();
    assert!(err.to_string().contains("predefined_queues"), "{err}");
}

#[tokio::test]
async fn sends_to_fifo_queues_carry_kombus_group_and_deduplication_ids() {
    let moto = MotoServer::start().unwrap();
    let opts = options();
    py(&moto, &opts, "add.apply_async((1, 2), queue='jobs.fifo')");
    let sqs = broker(&moto, &opts).await;
    let got = sqs.receive("jobs.fifo", 1, None).await.unwrap();
    let d = &got.deliveries[0];
    sqs.send(&d.envelope, "", "jobs.fifo").await.unwrap();
    sqs.ack("jobs.fifo", &d.receipt_handle).await.unwrap();
    let seen = py(
        &moto,
        &opts,
        r#"
c = boto()
url = c.get_queue_url(QueueName="jobs.fifo")["QueueUrl"]
m = c.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"], WaitTimeSeconds=5)["Messages"][0]
a = m["Attributes"]
print(a["MessageGroupId"], len(a["MessageDeduplicationId"]))
"#,
    );
    assert_eq!(seen.trim(), "default 36", "group `default`, a fresh UUID");
}
