//! Every message captured from real Celery (5.7.0 and 5.3.6) decodes to what kombu/Celery
//! themselves decoded it to (the fixtures' `expected`).

mod codec_support;

use celeriac_broker_bridge::codec::{decode, DecodeOptions};
use codec_support::{all_messages, assert_same, list_or_empty, sig_list};
use serde_json::{json, Value};

const KNOWN: [&str; 24] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    "compression",
    "redelivered",
    "taskset",
    "utc",
    "chord",
];

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

#[test]
fn every_fixture_decodes_like_celery() {
    let opts = DecodeOptions::default();
    let mut decoded = 0;
    let mut refused = 0;
    let mut protocols = std::collections::BTreeSet::new();
    let mut content_types = std::collections::BTreeSet::new();
    for m in all_messages() {
        let e = &m.expected;
        let n = &m.name;
        let result = decode(m.raw.as_bytes(), &opts);
        if e["refused"] == json!(true) {
            let err = result.expect_err(n);
            assert!(err.is_refused(), "{n}: {err}");
            assert_eq!(err.raw(), m.raw.as_bytes(), "{n}: raw bytes kept intact");
            assert_eq!(opt(err.task()), e["task"], "{n}");
            assert_eq!(opt(err.id()), e["id"], "{n}");
            refused += 1;
            continue;
        }
        let msg = result.unwrap_or_else(|err| panic!("{n}: {err}"));
        decoded += 1;
        protocols.insert(msg.protocol);
        content_types.insert(msg.content_type.clone());
        assert_eq!(Value::from(msg.protocol), e["protocol"], "{n}");
        assert_eq!(msg.content_type, e["content_type"], "{n}");
        assert_eq!(msg.task, e["task"], "{n}");
        assert_eq!(msg.id, e["id"], "{n}");
        assert_same(
            &format!("{n} args"),
            &Value::Array(msg.args.clone()),
            &e["args"],
        );
        assert_same(
            &format!("{n} kwargs"),
            &Value::Object(msg.kwargs.clone()),
            &e["kwargs"],
        );
        assert_eq!(
            opt(msg.eta.as_ref().map(|t| t.raw.clone())),
            e["eta"],
            "{n} eta"
        );
        assert_eq!(
            opt(msg.expires.as_ref().map(|t| t.raw.clone())),
            e["expires"],
            "{n} expires"
        );
        assert_eq!(Value::from(msg.retries), e["retries"], "{n} retries");
        assert_eq!(opt(msg.priority), e["priority"], "{n} priority");
        assert_eq!(opt(msg.root_id.clone()), e["root_id"], "{n} root_id");
        assert_eq!(opt(msg.parent_id.clone()), e["parent_id"], "{n} parent_id");
        assert_eq!(opt(msg.group.clone()), e["group"], "{n} group");
        assert_eq!(opt(msg.group_index), e["group_index"], "{n} group_index");
        assert_eq!(opt(msg.shadow.clone()), e["shadow"], "{n} shadow");
        assert_eq!(
            opt(msg.ignore_result),
            e["ignore_result"],
            "{n} ignore_result"
        );
        assert_same(
            &format!("{n} timelimit"),
            &json!([opt(msg.timelimit.0), opt(msg.timelimit.1)]),
            &e["timelimit"],
        );
        let embed = &e["embed"];
        assert_same(
            &format!("{n} callbacks"),
            &sig_list(&msg.callbacks),
            &list_or_empty(&embed["callbacks"]),
        );
        assert_same(
            &format!("{n} errbacks"),
            &sig_list(&msg.errbacks),
            &list_or_empty(&embed["errbacks"]),
        );
        assert_same(
            &format!("{n} chain"),
            &sig_list(&msg.chain),
            &list_or_empty(&embed["chain"]),
        );
        assert_same(
            &format!("{n} chord"),
            &msg.chord.as_ref().map_or(Value::Null, |c| c.to_value()),
            &embed["chord"],
        );
        // Headers: the interpreted ones agree, every other one is kept in extra_headers.
        let headers = e["headers"].as_object().expect("expected.headers");
        if msg.protocol == 2 {
            assert_eq!(
                headers.get("origin").cloned().unwrap_or(Value::Null),
                opt(msg.origin.clone()),
                "{n}"
            );
            assert_eq!(
                headers.get("argsrepr").cloned().unwrap_or(Value::Null),
                opt(msg.argsrepr.clone()),
                "{n}"
            );
            assert_same(
                &format!("{n} stamps"),
                &Value::Object(msg.stamps.clone()),
                headers.get("stamps").unwrap_or(&json!({})),
            );
            assert_eq!(
                headers
                    .get("stamped_headers")
                    .cloned()
                    .unwrap_or(Value::Null),
                opt(msg.stamped_headers.clone()),
                "{n}"
            );
        }
        let want_extra: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_same(
            &format!("{n} extra headers"),
            &Value::Object(msg.extra_headers.clone()),
            &Value::Object(want_extra),
        );
        let props = &e["properties"];
        assert_eq!(opt(msg.delivery_tag.clone()), props["delivery_tag"], "{n}");
        assert_eq!(opt(msg.reply_to.clone()), props["reply_to"], "{n}");
        assert_eq!(
            opt(msg.correlation_id.clone()),
            props["correlation_id"],
            "{n}"
        );
        assert_eq!(
            opt(msg.exchange.clone()),
            props["delivery_info"]["exchange"],
            "{n}"
        );
        assert_eq!(
            opt(msg.routing_key.clone()),
            props["delivery_info"]["routing_key"],
            "{n}"
        );
        if let Some(eta) = &msg.eta {
            assert!(eta.utc.timestamp() > 0, "{n}: eta parsed");
        }
    }
    assert!(
        refused >= 2,
        "the pickle fixtures of both versions are refused"
    );
    assert!(decoded > 40);
    assert_eq!(protocols.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    for ct in [
        "application/json",
        "application/x-msgpack",
        "application/x-yaml",
    ] {
        assert!(
            content_types.contains(ct),
            "a fixture with {ct} was decoded"
        );
    }
}

#[test]
fn a_json_only_accept_list_refuses_msgpack_and_yaml_fixtures() {
    let opts = DecodeOptions {
        accept: vec!["json".into()],
        ..DecodeOptions::default()
    };
    let mut seen = 0;
    for m in all_messages() {
        let ct = m.expected["content_type"].as_str().unwrap_or_default();
        let result = decode(m.raw.as_bytes(), &opts);
        if ct == "application/json" {
            assert!(result.is_ok(), "{}", m.name);
        } else {
            let err = result.expect_err(&m.name);
            assert!(err.is_refused(), "{}: {err}", m.name);
            assert_eq!(err.raw(), m.raw.as_bytes());
            seen += 1;
        }
    }
    assert!(seen >= 6);
}

/// `decode` reads the headers straight from the element into their slots; `decode_envelope`
/// splits the parsed envelope's map. Both must give the same message, or the same error, for every fixture
/// and for every header Celery defines made wrong in each way it can be.
#[test]
fn the_typed_and_map_readers_agree() {
    use celeriac_broker_bridge::codec::decode_envelope;
    use celeriac_broker_bridge::envelope::Envelope;
    let opts = DecodeOptions::default();
    let agree = |raw: &[u8], what: &str| {
        let from_text = decode(raw, &opts).map_err(|e| e.kind().clone());
        let from_map = Envelope::parse(raw)
            .map_err(Into::into)
            .and_then(|env| decode_envelope(&env, &opts));
        assert_eq!(from_text, from_map, "{what}");
    };
    let wrong = [
        json!(null),
        json!(7),
        json!(-1.5),
        json!(true),
        json!("x"),
        json!([1, "a"]),
        json!({"k": null}),
        json!("2026-01-02T03:04:05"),
    ];
    let mut variants = 0;
    let mut per_shape = std::collections::BTreeMap::new();
    for m in all_messages() {
        agree(m.raw.as_bytes(), &m.name);
        let env: Value = serde_json::from_str(&m.raw).unwrap();
        // Every header made wrong in up to three messages of each protocol and content type.
        let shape = (
            m.expected["protocol"].to_string(),
            env["content-type"].to_string(),
        );
        let seen = per_shape.entry(shape).or_insert(0);
        *seen += 1;
        if !env["headers"].is_object() || *seen > 3 {
            continue;
        }
        for key in KNOWN.iter().copied().chain(["traceparent", "x-extra"]) {
            let mut without = env.clone();
            without["headers"].as_object_mut().unwrap().remove(key);
            agree(
                &serde_json::to_vec(&without).unwrap(),
                &format!("{} - {key}", m.name),
            );
            for value in &wrong {
                let mut changed = env.clone();
                changed["headers"][key] = value.clone();
                let raw = serde_json::to_vec(&changed).unwrap();
                agree(&raw, &format!("{} {key}={value}", m.name));
                variants += 1;
            }
        }
    }
    assert!(variants > 1000, "{variants} variants");
}
