//! The Rust producer API (`celeriac_worker::client`) against real workers: tasks, chains,
//! groups and chords sent from Rust run on a Python Celery worker and on celeriac, and the Rust
//! side reads the results (values, stored exceptions, revocations); a celeriac task sends a
//! subtask through `TaskContext::client` with its parent and root ids; what lands in Redis is
//! byte for byte what Python Celery 5.7 sent for the same call.

mod support;

use std::time::Duration;

use celeriac_broker_bridge::backend::TaskState;
use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use celeriac_testkit::workspace_root;
use celeriac_worker::client::{
    chain, chord, group, AnyResult, Client, ClientError, Producer, Signature,
};
use celeriac_worker::config::{Settings, WorkerArgs};
use redis::Commands;
use serde_json::{json, Value};
use support::World;

const WAIT: Duration = Duration::from_secs(60);

async fn client(world: &World) -> Client {
    Client::connect(&world.url, Some(&world.url))
        .await
        .expect("connect the client")
}

fn add(a: i64, b: i64) -> Signature {
    Signature::new("t.add").arg(a).arg(b)
}

/// Tasks and canvases sent from Rust, run by whatever worker consumes `celery`.
async fn tasks_and_canvases(world: &World, c: &Client) {
    let r = c.send(&add(2, 3)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), json!(5));
    assert_eq!(r.state().await.unwrap(), TaskState::Success);
    assert!(r.ready().await.unwrap());

    let by_name = c
        .send_task("t.echo", vec![json!({"k": [1, "é"]})], Default::default())
        .await
        .unwrap();
    assert_eq!(by_name.get(WAIT).await.unwrap(), json!({"k": [1, "é"]}));

    let flow = chain([
        add(2, 3),
        Signature::new("t.mul").arg(4),
        add(1, 0).immutable(),
    ]);
    assert_eq!(
        c.send(&flow).await.unwrap().get(WAIT).await.unwrap(),
        json!(1)
    );
    let flow = chain([add(2, 3), Signature::new("t.mul").arg(4)]);
    let product = c.send(&flow).await.unwrap();
    assert_eq!(product.get(WAIT).await.unwrap(), json!(20));
    match product.parent() {
        Some(AnyResult::Task(sum)) => assert_eq!(sum.get(WAIT).await.unwrap(), json!(5)),
        other => panic!("a chain step's parent is the previous step, got {other:?}"),
    }

    let mixed = chain([
        add(1, 2),
        group([
            Signature::new("t.mul").arg(2),
            Signature::new("t.mul").arg(3),
        ]),
        Signature::new("t.tsum"),
        chain([Signature::new("t.add").arg(5)]),
        chord(
            [add(1, 1).immutable(), Signature::new("t.mul").arg(2)],
            Signature::new("t.tsum"),
        ),
    ]);
    // 1 + 2 = 3; [6, 9] summed = 15; + 5 = 20; [2, 40] summed = 42.
    assert_eq!(
        c.send(&mixed).await.unwrap().get(WAIT).await.unwrap(),
        json!(42)
    );

    // Options of later steps apply when the step is sent, as in Celery.
    let timed = chain([
        add(1, 1),
        Signature::new("t.mul")
            .arg(3)
            .expires_in(300.0)
            .countdown(0.2),
    ]);
    assert_eq!(
        c.send(&timed).await.unwrap().get(WAIT).await.unwrap(),
        json!(6)
    );

    let g = c
        .send_group(&group((0..4).map(|i| add(i, i))))
        .await
        .unwrap();
    assert_eq!(g.results().len(), 4);
    assert_eq!(
        g.get(WAIT).await.unwrap(),
        vec![json!(0), json!(2), json!(4), json!(6)]
    );
    assert_eq!(g.completed_count().await.unwrap(), 4);
    g.save().await.unwrap();
    let restored = c.restore_group(g.id()).await.unwrap().unwrap();
    assert_eq!(
        restored.get(WAIT).await.unwrap(),
        vec![json!(0), json!(2), json!(4), json!(6)]
    );
    let python = world.py(&format!(
        "from celery_app import app\nfrom celery.result import GroupResult\nprint(GroupResult.restore('{}', app=app).get(timeout=60))",
        g.id()
    ));
    assert_eq!(python.trim(), "[0, 2, 4, 6]");

    let c3 = chord((0..3).map(|i| add(i, i)), Signature::new("t.tsum"));
    assert_eq!(
        c.send(&c3).await.unwrap().get(WAIT).await.unwrap(),
        json!(6)
    );

    let linked = add(2, 3).link(Signature::new("t.mul").arg(10).task_id("linked-mul"));
    assert_eq!(
        c.send(&linked).await.unwrap().get(WAIT).await.unwrap(),
        json!(5)
    );
    assert_eq!(c.result("linked-mul").get(WAIT).await.unwrap(), json!(50));

    let failed = c.send(&Signature::new("t.fail").arg("boom")).await.unwrap();
    match failed.get(WAIT).await {
        Err(ClientError::Task {
            state, exception, ..
        }) => {
            assert_eq!(state, TaskState::Failure);
            assert_eq!(
                (exception.exc_module.as_str(), exception.exc_type.as_str()),
                ("builtins", "ValueError")
            );
            assert_eq!(exception.args, vec![json!("boom")]);
        }
        other => panic!("a failed task's get returns its exception, got {other:?}"),
    }
    assert_eq!(failed.state().await.unwrap(), TaskState::Failure);

    // Nobody consumes `parked`: the task stays PENDING and `get` times out.
    let parked = c.send(&add(1, 1).queue("parked")).await.unwrap();
    assert_eq!(parked.state().await.unwrap(), TaskState::Pending);
    assert!(!parked.ready().await.unwrap());
    assert!(matches!(
        parked.get(Duration::from_millis(300)).await,
        Err(ClientError::Timeout { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_celery_runs_what_rust_sends() {
    let world = World::new(&[]);
    let _py = world.python_worker("py", "celery");
    tasks_and_canvases(&world, &client(&world).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_runs_what_rust_sends() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4"]);
    tasks_and_canvases(&world, &client(&world).await).await;
}

/// Revoke a task no worker has received yet, then let the worker consume its queue: pidbox
/// requests are handled in order, so the worker knows the id when the message arrives.
async fn revoke_is_seen(world: &World, node: &str) {
    let c = client(world).await;
    let pong = world.py(&format!(
        "from celery_app import app\nprint(app.control.ping(destination=['{node}@test'], timeout=10))"
    ));
    assert!(pong.contains("pong"), "{pong}");
    let r = c.send(&add(1, 2).queue("later")).await.unwrap();
    r.revoke(false).await.unwrap();
    let added = world.py(&format!(
        "from celery_app import app\nprint(app.control.add_consumer('later', destination=['{node}@test'], reply=True, timeout=10))"
    ));
    assert!(added.contains("later"), "{added}");
    match r.get(WAIT).await {
        Err(ClientError::Task {
            state, exception, ..
        }) => {
            assert_eq!(state, TaskState::Revoked);
            assert_eq!(exception.exc_type, "TaskRevokedError");
        }
        other => panic!("a revoked task's get returns TaskRevokedError, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_celeriac_workers_see_a_revoke_from_rust() {
    let world = World::new(&[]);
    let mut py = world.python_worker("py", "celery");
    revoke_is_seen(&world, "py").await;
    py.signal("TERM");
    py.wait_exit(Duration::from_secs(60)).unwrap();
    let _rust = world.celeriac("rust", &["-c", "2"]);
    revoke_is_seen(&world, "rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celeriac_task_sends_subtasks_as_its_children() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4"]);
    let out = world.py(r#"
import json
from celery_app import app
r = app.send_task("t.spawn", args=("t.add", [2, 3], "held", False), root_id="root-1")
print(r.id)
print(json.dumps(r.get(timeout=60)))
w = app.send_task("t.spawn", args=("t.add", [4, 5], "celery", True))
print(json.dumps(w.get(timeout=60)))
"#);
    let lines: Vec<&str> = out.lines().collect();
    let parent = lines[0];
    let spawned: Value = serde_json::from_str(lines[1]).unwrap();
    let child = spawned["id"].as_str().unwrap();
    let waited: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(waited["value"], json!(9), "{out}");
    let built = world.py(
        r#"
import json
from celery_app import app
from celery.result import result_from_tuple
t = app.send_task("t.build_chain").get(timeout=60)
r = result_from_tuple(t, app=app)
print(json.dumps([len(t), isinstance(t[0][1], list), r.get(timeout=60), r.parent.parent.get(timeout=60)]))
"#,
    );
    // (1 + 1 + 2) then [4 + 3, 4 + 4] summed.
    assert_eq!(built.trim(), "[2, true, 15, 4]");
    let refused = world.py(r#"
from celery_app import app
try:
    app.send_task("t.join", args=(1, 2)).get(timeout=60)
except RuntimeError as e:
    print(str(e).splitlines()[0])
"#);
    assert_eq!(refused.trim(), "Never call result.get() within a task!");

    // The subtask as it waits in Redis, read as a Python worker reads it.
    let raw: Vec<String> = world.redis().lrange("held", 0, -1).unwrap();
    assert_eq!(raw.len(), 1);
    let msg: Value = serde_json::from_str(&raw[0]).unwrap();
    let h = &msg["headers"];
    assert_eq!(h["id"], json!(child));
    assert_eq!(h["task"], json!("t.add"));
    assert_eq!(h["parent_id"], json!(parent));
    assert_eq!(h["root_id"], json!("root-1"));
    assert_eq!(h["argsrepr"], json!("(2, 3)"));
    assert!(h["origin"].as_str().unwrap().starts_with("gen"), "{h}");
    let _py = world.python_worker("py", "held");
    let got = world.py(&format!(
        "from celery_app import app\nr = app.AsyncResult('{child}')\nprint(r.get(timeout=60), r._get_task_meta()['parent_id'])"
    ));
    assert_eq!(got.trim(), format!("5 {parent}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_lands_in_redis_is_what_python_sent() {
    let world = World::new(&[]);
    let path =
        workspace_root().join("proto-fixtures/fixtures/celery-5.7.0/p2_send_task_by_name.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let python_raw = fixture["messages"][0]["raw"].as_str().unwrap();
    let python: Value = serde_json::from_str(python_raw).unwrap();
    // What is random in the capture is given to the client: the id, origin and reply_to.
    let producer = Producer {
        origin: python["headers"]["origin"].as_str().unwrap().into(),
        reply_to: python["properties"]["reply_to"].as_str().unwrap().into(),
        ..Producer::default()
    };
    let broker = Broker::connect(&world.url, TransportOptions::default())
        .await
        .unwrap();
    let c = Client::from_parts(broker, None, producer);
    let id = python["headers"]["id"].as_str().unwrap();
    let sig = Signature::new("tasks.add").arg(2).arg(3).task_id(id);
    c.send(&sig).await.unwrap();
    let raw: Vec<String> = world.redis().lrange("celery", 0, -1).unwrap();
    assert_eq!(raw.len(), 1);
    let ours: Value = serde_json::from_str(&raw[0]).unwrap();
    let tag = ours["properties"]["delivery_tag"].as_str().unwrap();
    let python_tag = python["properties"]["delivery_tag"].as_str().unwrap();
    assert_eq!(raw[0].replace(tag, python_tag), python_raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_member_adds_a_task_to_its_chord() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4"]);
    let c = client(&world).await;
    // t.grow(1) adds t.add(1, 1): the body sums 1, 4 and 2.
    let grown = chord(
        [Signature::new("t.grow").arg(1), add(2, 2)],
        Signature::new("t.tsum"),
    );
    assert_eq!(
        c.send(&grown).await.unwrap().get(WAIT).await.unwrap(),
        json!(7)
    );
    // A whole chord added: its body's result is one more part (Celery's `add_chord_to_chord`).
    let nested = chord(
        [Signature::new("t.grow_chord").arg(json!([1, 2, 3])).arg(4)],
        Signature::new("t.echo"),
    );
    let mut parts: Vec<i64> =
        serde_json::from_value(c.send(&nested).await.unwrap().get(WAIT).await.unwrap()).unwrap();
    parts.sort();
    assert_eq!(parts, vec![0, 5 + 6 + 7]);
    let alone = c.send(&Signature::new("t.grow").arg(1)).await.unwrap();
    match alone.get(WAIT).await {
        Err(ClientError::Task { exception, .. }) => {
            assert_eq!(exception.exc_type, "ValueError");
            assert_eq!(
                exception.args,
                vec![json!("Current task is not member of any chord")]
            );
        }
        other => panic!("add_to_chord outside a chord fails with ValueError, got {other:?}"),
    }
}

/// A client configured as the worker is (`CELERY_*` variables): signed task bodies a Python
/// worker accepting only `auth` runs, and signed results read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_the_settings_signs_as_the_worker_does() {
    let keys = workspace_root().join("proto-fixtures/fixtures/signed");
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let mut world = World::new(&[
        ("CELERY_TASK_SERIALIZER", "auth"),
        ("CELERY_RESULT_SERIALIZER", "auth"),
        ("CELERY_ACCEPT_CONTENT", "auth"),
        ("CELERY_SECURITY_KEY", &path(keys.join("key-encrypted.pem"))),
        ("CELERY_SECURITY_CERTIFICATE", &path(keys.join("cert.pem"))),
        (
            "CELERY_SECURITY_CERT_STORE",
            &path(keys.join("store/*.pem")),
        ),
    ]);
    let password_file = world.dir().join("key-password");
    std::fs::write(&password_file, "test-password\n").unwrap();
    world.env.push((
        "CELERY_SECURITY_KEY_PASSWORD_FILE".into(),
        path(password_file),
    ));
    let _py = world.python_worker("pysigned", "celery");
    let settings = Settings::load(&WorkerArgs::default(), world.env.clone()).unwrap();
    let c = Client::from_settings(&settings).await.unwrap();
    let r = c.send(&add(20, 22)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), json!(42));
    let raw: Vec<u8> = world
        .redis()
        .get(format!("celery-task-meta-{}", r.id()))
        .unwrap();
    assert!(
        serde_json::from_slice::<Value>(&raw).is_err(),
        "the stored result is signed, not plain JSON"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_with_terminate_stops_a_running_task() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let c = client(&world).await;
    let r = c
        .send(&Signature::new("t.tracked").arg(600_000))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.state().await.unwrap() != TaskState::Started {
        assert!(
            tokio::time::Instant::now() < deadline,
            "t.tracked never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.revoke(true).await.unwrap();
    match r.get(WAIT).await {
        Err(ClientError::Task {
            state, exception, ..
        }) => {
            assert_eq!(state, TaskState::Revoked);
            assert_eq!(exception.exc_type, "TaskRevokedError");
        }
        other => panic!("a terminated task's get returns TaskRevokedError, got {other:?}"),
    }
}
