//! The messages a [`Producer`] writes, byte for byte against what Python Celery 5.7 wrote for
//! the same call (`proto-fixtures/fixtures/celery-5.7.0`). What is random in a capture is taken
//! from it: task and group ids (given as `task_id`), `origin`, `reply_to`, the delivery tag, and
//! "now" for countdowns and expiry in seconds.

use base64::Engine;
use celeriac_broker_bridge::backend::python_json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{chain, chord, group, Frozen, Producer, Signature};

struct Fixture {
    raws: Vec<String>,
    envelopes: Vec<Value>,
}

impl Fixture {
    fn load(case: &str) -> Fixture {
        let path = format!(
            "{}/../proto-fixtures/fixtures/celery-5.7.0/{case}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let raws: Vec<String> = doc["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["raw"].as_str().unwrap().to_string())
            .collect();
        let envelopes = raws
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        Fixture { raws, envelopes }
    }

    fn header(&self, i: usize, key: &str) -> String {
        self.envelopes[i]["headers"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn body(&self, i: usize) -> Value {
        let b64 = self.envelopes[i]["body"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn id(&self, i: usize) -> String {
        self.header(i, "id")
    }

    fn time(&self, key: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.header(0, key))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn producer(&self) -> Producer {
        Producer {
            origin: self.header(0, "origin"),
            reply_to: self.envelopes[0]["properties"]["reply_to"]
                .as_str()
                .unwrap()
                .to_string(),
            ..Producer::default()
        }
    }
}

/// Send `sig` at `now` and compare every message with the capture, byte for byte.
fn same_bytes(case: &str, fx: &Fixture, sig: Signature, now: DateTime<Utc>) -> Frozen {
    let prepared = fx.producer().prepare(&sig, now).unwrap();
    assert_eq!(
        prepared.messages.len(),
        fx.raws.len(),
        "{case}: message count"
    );
    for (i, out) in prepared.messages.iter().enumerate() {
        let mut ours = out.envelope.clone().into_value();
        ours["properties"]["delivery_tag"] = fx.envelopes[i]["properties"]["delivery_tag"].clone();
        let ours = String::from_utf8(python_json::to_vec(&ours)).unwrap();
        if ours != fx.raws[i] {
            let decode = |raw: &str| {
                let mut v: Value = serde_json::from_str(raw).unwrap();
                let body = base64::engine::general_purpose::STANDARD
                    .decode(v["body"].as_str().unwrap())
                    .unwrap();
                v["body"] = String::from_utf8_lossy(&body).into_owned().into();
                v
            };
            panic!(
                "{case}[{i}] differs\n ours: {}\npython: {}",
                decode(&ours),
                decode(&fx.raws[i])
            );
        }
    }
    prepared.result
}

fn add(fx: &Fixture) -> Signature {
    Signature::new("tasks.add")
        .arg(2)
        .arg(3)
        .task_id(fx.id(0))
        // A registered Python task's `apply_async` writes its own `ignore_result` (False);
        // `send_task` by name writes null, as a Rust client does by default.
        .ignore_result(false)
}

fn from_expected_args(fx: &Fixture, name: &str) -> Signature {
    let body = fx.body(0);
    let args = body[0].as_array().unwrap().clone();
    let kwargs: Map<String, Value> = body[1].as_object().unwrap().clone();
    Signature::new(name)
        .args(args)
        .kwargs(kwargs)
        .task_id(fx.id(0))
        .ignore_result(false)
}

fn check(case: &str, build: impl Fn(&Fixture) -> Signature) {
    let fx = Fixture::load(case);
    same_bytes(case, &fx, build(&fx), Utc::now());
}

#[test]
fn single_tasks_match_celery_byte_for_byte() {
    check("p2_args_positional", add);
    check("p2_kwargs", |fx| {
        Signature::new("tasks.add")
            .kwarg("x", 2)
            .kwarg("y", 3)
            .task_id(fx.id(0))
            .ignore_result(false)
    });
    check("p2_unicode", |fx| from_expected_args(fx, "tasks.echo"));
    // (`p2_nested` is left out: its Python call passes tuples, which JSON arguments cannot
    // express, so its `argsrepr` shows `(1, 2)` where a Rust call's shows `[1, 2]`.)
    check("p2_scalars", |fx| from_expected_args(fx, "tasks.echo"));
    let eta = chrono::NaiveDate::from_ymd_opt(2030, 1, 2)
        .unwrap()
        .and_hms_micro_opt(3, 4, 5, 123_456)
        .unwrap()
        .and_utc();
    check("p2_eta", |fx| add(fx).eta(eta));
    check("p2_eta_naive", |fx| {
        add(fx).option("eta", "2030-01-02T03:04:05")
    });
    let expires = chrono::NaiveDate::from_ymd_opt(2031, 2, 3)
        .unwrap()
        .and_hms_opt(4, 5, 6)
        .unwrap()
        .and_utc();
    // `properties.expiration` counts from "now": the capture's is checked with its own now.
    let fx = Fixture::load("p2_expires_datetime");
    let ms: i64 = fx.envelopes[0]["properties"]["expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = expires - chrono::Duration::milliseconds(ms);
    same_bytes(
        "p2_expires_datetime",
        &fx,
        add(&fx).expires_at(expires),
        now,
    );
    for p in 0..=9u8 {
        check(&format!("p2_priority_{p}"), |fx| add(fx).priority(p));
    }
    check("p2_custom_queue", |fx| add(fx).queue("high"));
    check("p2_custom_task_id", add);
    check("p2_headers", |fx| {
        add(fx)
            .header("x-custom", "v")
            .header("tenant", 42)
            .header("nested", serde_json::json!({"k": [1, 2]}))
    });
    check("p2_retries", |fx| add(fx).option("retries", 3));
    check("p2_time_limits", |fx| {
        add(fx).time_limit(30.0).soft_time_limit(20.5)
    });
    check("p2_link_and_link_error", |fx| {
        add(fx)
            .link(Signature::new("tasks.mul").arg(4))
            .link_error(Signature::new("tasks.on_error"))
    });
    check("p2_link_to_group", |fx| {
        add(fx).link(group([
            Signature::new("tasks.mul").arg(2),
            Signature::new("tasks.mul").arg(3),
        ]))
    });
    check("p2_ignore_result", |fx| add(fx).ignore_result(true));
    check("p2_shadow", |fx| add(fx).shadow("shadowed.add"));
    check("p2_send_task_by_name", |fx| {
        Signature::new("tasks.add").arg(2).arg(3).task_id(fx.id(0))
    });
    check("p2_send_task_unregistered", |fx| {
        Signature::new("tasks.does_not_exist")
            .arg(1)
            .task_id(fx.id(0))
    });
    check("p2_stamped", |fx| {
        add(fx)
            .stamp("tenant", "acme")
            .stamp("tags", serde_json::json!(["a", "b"]))
    });
}

#[test]
fn times_in_seconds_count_from_now_as_celery() {
    let fx = Fixture::load("p2_countdown");
    let now = fx.time("eta") - chrono::Duration::seconds(60);
    same_bytes("p2_countdown", &fx, add(&fx).countdown(60.0), now);
    let fx = Fixture::load("p2_expires_seconds");
    let now = fx.time("expires") - chrono::Duration::seconds(60);
    same_bytes("p2_expires_seconds", &fx, add(&fx).expires_in(60.0), now);
}

#[test]
fn canvases_match_celery_byte_for_byte() {
    let fx = Fixture::load("p2_chain");
    let steps = fx.body(0)[2]["chain"].clone();
    let step_id = |i: usize| steps[i]["options"]["task_id"].as_str().unwrap().to_string();
    let flow = chain([
        add(&fx),
        Signature::new("tasks.mul").arg(4).task_id(step_id(1)),
        Signature::new("tasks.add").arg(10).task_id(step_id(0)),
    ]);
    let last = same_bytes("p2_chain", &fx, flow, Utc::now());
    assert_eq!(last.id(), step_id(0));
    let mul = last.parent().unwrap();
    assert_eq!(mul.id(), step_id(1));
    assert_eq!(mul.parent().unwrap(), &Frozen::task(fx.id(0)));

    let fx = Fixture::load("p2_group");
    let gid = fx.header(0, "group");
    let members = (0..3).map(|i| {
        Signature::new("tasks.add")
            .arg(i)
            .arg(i)
            .task_id(fx.id(i as usize))
            .ignore_result(false)
    });
    let frozen = same_bytes(
        "p2_group",
        &fx,
        group(members).task_id(gid.clone()),
        Utc::now(),
    );
    let Frozen::Group { id, members, .. } = frozen else {
        panic!("a group's result is a group");
    };
    assert_eq!(id, gid);
    assert_eq!(
        members,
        (0..3).map(|i| Frozen::task(fx.id(i))).collect::<Vec<_>>()
    );

    let fx = Fixture::load("p2_chord");
    let gid = fx.header(0, "group");
    let body_id = fx.body(0)[2]["chord"]["options"]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let header: Vec<Signature> = (0..3)
        .map(|i| {
            Signature::new("tasks.add")
                .arg(i)
                .arg(i)
                .task_id(fx.id(i as usize))
                .ignore_result(false)
        })
        .collect();
    let c = chord(
        header,
        Signature::new("tasks.tsum").task_id(body_id.clone()),
    )
    .task_id(gid.clone());
    let prepared = fx.producer().prepare(&c, Utc::now()).unwrap();
    assert_eq!(prepared.chord_sizes, vec![(gid.clone(), 3)]);
    let body = same_bytes("p2_chord", &fx, c, Utc::now());
    assert_eq!(body.id(), body_id);
    assert_eq!(body.parent().unwrap().id(), gid);

    // A group followed by a task is upgraded to a chord, as Celery's `prepare_steps` does.
    let fx = Fixture::load("p2_chain_with_group_and_chord");
    let steps = fx.body(0)[2]["chain"].clone();
    let id = |v: &Value| v["options"]["task_id"].as_str().unwrap().to_string();
    let member = |step: usize, i: usize| id(&steps[step]["kwargs"]["header"]["kwargs"]["tasks"][i]);
    let body = |step: usize| id(&steps[step]["kwargs"]["body"]);
    let tsum = |step: usize| Signature::new("tasks.tsum").task_id(body(step));
    let flow = chain([
        Signature::new("tasks.add")
            .arg(1)
            .arg(2)
            .task_id(fx.id(0))
            .ignore_result(false),
        group([
            Signature::new("tasks.mul").arg(2).task_id(member(1, 0)),
            Signature::new("tasks.mul").arg(3).task_id(member(1, 1)),
        ])
        .task_id(id(&steps[1])),
        tsum(1),
        chord(
            [
                Signature::new("tasks.add")
                    .arg(1)
                    .arg(1)
                    .immutable()
                    .task_id(member(0, 0)),
                Signature::new("tasks.add")
                    .arg(2)
                    .arg(2)
                    .immutable()
                    .task_id(member(0, 1)),
            ],
            tsum(0),
        )
        .task_id(id(&steps[0])),
    ]);
    let last = same_bytes("p2_chain_with_group_and_chord", &fx, flow, Utc::now());
    assert_eq!(last.id(), body(0));
    // As Celery's `as_tuple()`: the body follows its header, which follows the previous body…
    let tuple = last.as_tuple();
    assert_eq!(tuple[0][0], json!(body(0)));
    assert_eq!(tuple[0][1][0][0], json!(id(&steps[0])));
    assert_eq!(tuple[0][1][1][0], json!([[member(0, 0), null], null]));
    assert_eq!(tuple[0][1][0][1][0][0], json!(body(1)));
    assert_eq!(tuple[0][1][0][1][0][1][0][0], json!(id(&steps[1])));
    assert_eq!(
        tuple[0][1][0][1][0][1][0][1],
        json!([[fx.id(0), null], null])
    );
}
