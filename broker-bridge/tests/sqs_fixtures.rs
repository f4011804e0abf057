//! Bodies real Celery 5.7 / kombu 5.7 left in SQS (moto), captured by
//! `proto-fixtures/capture_sqs.py`: celeriac decodes each to exactly the text kombu decodes,
//! re-encodes it to exactly the body kombu sent, names the queue as kombu does, and decodes the
//! task as Celery's worker does.

mod codec_support;

use celeriac_broker_bridge::codec::{decode, DecodeOptions};
use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::sqs::body::{decode_body, encode_body};
use celeriac_broker_bridge::sqs::SqsOptions;
use codec_support::assert_same;
use serde_json::{json, Value};

fn cases() -> Vec<Value> {
    let dir = celeriac_testkit::fixtures_dir().join("sqs/celery-5.7.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("INDEX.json")).unwrap()).unwrap();
    index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let file = dir.join(format!("{}.json", c["case"].as_str().unwrap()));
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn every_sqs_body_decodes_and_encodes_byte_for_byte() {
    let cases = cases();
    assert!(cases.len() >= 8, "all captured cases are present");
    let mut messages = 0;
    for case in &cases {
        let name = case["case"].as_str().unwrap();
        let opts = SqsOptions::from_map(case["transport_options"].as_object().unwrap()).unwrap();
        for m in case["messages"].as_array().unwrap() {
            messages += 1;
            let raw = m["raw"].as_str().unwrap();
            let e = &m["expected"];
            let text = decode_body(raw);
            assert_eq!(
                text,
                e["decoded_text"].as_str().unwrap(),
                "{name}: decoded body"
            );
            assert_eq!(
                encode_body(&text, opts.sqs_base64_encoding),
                raw,
                "{name}: the body kombu sent is the encoding of its envelope"
            );
            let env =
                Envelope::parse(text.as_bytes()).unwrap_or_else(|err| panic!("{name}: {err}"));
            let info = &e["delivery_info"];
            assert_eq!(env.exchange(), info["exchange"].as_str(), "{name}");
            assert_eq!(env.routing_key(), info["routing_key"].as_str(), "{name}");
            assert_eq!(
                opts.sqs_queue_name(env.routing_key().unwrap()),
                m["sqs_queue"].as_str().unwrap(),
                "{name}: SQS queue name"
            );
            assert_eq!(
                Value::Object(env.headers().unwrap().clone()),
                e["headers"],
                "{name}"
            );
            // kombu replaces properties.delivery_tag with the receipt handle on receipt; the
            // other properties are the envelope's.
            assert_eq!(e["delivery_tag_is_receipt_handle"], json!(true), "{name}");
            let mut props = env.properties().clone();
            props.remove("delivery_info");
            props.remove("delivery_tag");
            let mut want = e["properties"].as_object().unwrap().clone();
            want.remove("delivery_tag");
            assert_eq!(props, want, "{name}: properties");
            assert_eq!(env.content_type(), e["content_type"].as_str(), "{name}");

            let msg = decode(text.as_bytes(), &DecodeOptions::default())
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(msg.task, e["headers"]["task"], "{name}");
            assert_eq!(msg.id, e["headers"]["id"], "{name}");
            assert_same(
                &format!("{name} args"),
                &Value::Array(msg.args.clone()),
                &e["body"][0],
            );
            assert_same(
                &format!("{name} kwargs"),
                &Value::Object(msg.kwargs.clone()),
                &e["body"][1],
            );
            assert_eq!(
                msg.chain.len(),
                e["body"][2]["chain"].as_array().map_or(0, Vec::len),
                "{name}: chain"
            );
        }
    }
    assert_eq!(messages, cases.len(), "one message per case");
}

#[test]
fn fifo_messages_carry_kombus_group_and_deduplication_ids() {
    let case = cases()
        .into_iter()
        .find(|c| c["case"] == "fifo_queue")
        .expect("fifo case");
    let m = &case["messages"][0];
    assert_eq!(m["sqs_queue"], "jobs.fifo");
    assert_eq!(m["group_id"], "default");
    assert_eq!(m["has_deduplication_id"], json!(true));
}
