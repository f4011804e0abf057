//! Rotated Redis credentials: a worker reading `CELERY_BROKER_URL_FILE` and
//! `CELERY_RESULT_BACKEND_FILE` keeps working, without a restart, when the ACL password (or
//! user) changes and the files are rewritten: new connections use the files' current
//! credentials and live ones re-authenticate. The query cache, on the backend's Redis, too.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use celeriac_testkit::RedisServer;
use support::{eventually, query_task_config, World};

fn acl(admin: &mut redis::Connection, args: &[&str]) {
    let _: () = redis::cmd("ACL").arg(args).query(admin).unwrap();
}

/// `(id, user)` of every client connection, as `CLIENT LIST` shows them.
fn clients(admin: &mut redis::Connection) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
    list.lines()
        .map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("id="), field("user="))
        })
        .collect()
}

fn ids_of(admin: &mut redis::Connection, user: &str) -> HashSet<String> {
    clients(admin)
        .into_iter()
        .filter(|(_, u)| u == user)
        .map(|(id, _)| id)
        .collect()
}

fn write_both(world: &World, url: &str) {
    for name in ["broker-url", "backend-url"] {
        std::fs::write(world.dir().join(name), format!("{url}\n")).unwrap();
    }
}

/// Whether some connection listens to the cache's invalidation channel.
fn invalidations_subscribed(admin: &mut redis::Connection) -> bool {
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg(&["CHANNELS", "celeriac:cache:*invalidate"])
        .query(admin)
        .unwrap();
    !channels.is_empty()
}

/// A Python script printing the titles of `ids`, one query task each, in order.
fn tickets(ids: std::ops::Range<u32>) -> String {
    format!(
        "from celery_app import app\nfor i in range({}, {}):\n    print(app.send_task('q.get_ticket', args=(i,)).get(timeout=60)['title'])",
        ids.start, ids.end
    )
}

const ROUND_TRIP: &str = r#"
from celery_app import app
import time
print(app.send_task("t.add", args=(20, 22)).get(timeout=60))
deadline = time.time() + 60
replies = []
while not replies and time.time() < deadline:
    replies = [r for reply in app.control.ping(timeout=2) for r in reply]
print(replies)
"#;

#[test]
fn a_rotated_password_needs_no_restart() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let mut admin = redis::Client::open(redis.url(0))
        .unwrap()
        .get_connection()
        .unwrap();
    let everything = ["on", "~*", "&*", "+@all"];
    acl(
        &mut admin,
        &[&["SETUSER", "producer", ">producer-pw"], &everything[..]].concat(),
    );
    acl(
        &mut admin,
        &[&["SETUSER", "celeriac", ">first-pw"], &everything[..]].concat(),
    );
    acl(&mut admin, &["SETUSER", "default", "off"]);
    let _: () = redis::cmd("AUTH")
        .arg("producer")
        .arg("producer-pw")
        .query(&mut admin)
        .unwrap();
    let producer_url = format!("redis://producer:producer-pw@127.0.0.1:{port}/0");
    let mut world = World::around(redis, producer_url, &[]);
    let python_env = world.env.clone();
    let config = query_task_config(&world, "");
    let db = world.dir().join("tickets.db");
    world.py(&format!(
        "import sqlite3\nc = sqlite3.connect({:?})\nfor i in range(2, 10): c.execute('INSERT INTO tickets VALUES (?, ?)', (i, f'ticket {{i}}'))\nc.commit()",
        db.display().to_string()
    ));
    write_both(
        &world,
        &format!("redis://celeriac:first-pw@127.0.0.1:{port}/0"),
    );
    let broker_file = world.dir().join("broker-url");
    let backend_file = world.dir().join("backend-url");
    world.env = vec![
        (
            "CELERY_BROKER_URL_FILE".into(),
            broker_file.to_str().unwrap().into(),
        ),
        (
            "CELERY_RESULT_BACKEND_FILE".into(),
            backend_file.to_str().unwrap().into(),
        ),
    ];
    let mut worker = world.celeriac("w1", &["-c", "2", "--config", config.to_str().unwrap()]);
    world.env = python_env;
    let expected = "42\n['w1@test']";
    assert_eq!(world.py(ROUND_TRIP).trim(), expected);
    assert_eq!(world.py(&tickets(1..2)).trim(), "printer on fire");
    assert!(!ids_of(&mut admin, "celeriac").is_empty());
    assert!(invalidations_subscribed(&mut admin));

    // Rotate the password: the old one stops working, the files get the new one, and every
    // connection of the worker is dropped, so each must reconnect with what the files hold now.
    acl(
        &mut admin,
        &["SETUSER", "celeriac", "resetpass", ">second-pw"],
    );
    write_both(
        &world,
        &format!("redis://celeriac:second-pw@127.0.0.1:{port}/0"),
    );
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "celeriac"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(world.py(ROUND_TRIP).trim(), expected);
    let old = redis::Client::open(format!("redis://celeriac:first-pw@127.0.0.1:{port}/0"))
        .unwrap()
        .get_connection();
    assert!(old.is_err(), "the old password still works");
    // The cache's L2 connection reconnected too: tickets not in L1 are stored in Redis (the
    // first read after the kill may fail on the dead connection and read through).
    let titles: Vec<String> = (2..10).map(|id| format!("ticket {id}")).collect();
    assert_eq!(world.py(&tickets(2..10)).trim(), titles.join("\n"));
    let stored = eventually(Duration::from_secs(30), || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("celeriac:cache:*ticket:(*)*")
            .query(&mut admin)
            .unwrap();
        (keys.len() > 1).then_some(())
    });
    assert!(
        stored.is_some(),
        "the cache did not reach Redis after the rotation: {}",
        worker.log()
    );
    assert!(
        eventually(Duration::from_secs(60), || invalidations_subscribed(
            &mut admin
        )
        .then_some(()))
        .is_some(),
        "the cache did not resubscribe to invalidations"
    );

    // Rotate to another user: live connections re-authenticate (same connection id, new
    // user) within the poll interval, without being dropped.
    let before = ids_of(&mut admin, "celeriac");
    acl(
        &mut admin,
        &[&["SETUSER", "celeriac-next", ">third-pw"], &everything[..]].concat(),
    );
    write_both(
        &world,
        &format!("redis://celeriac-next:third-pw@127.0.0.1:{port}/0"),
    );
    let reauthenticated = eventually(Duration::from_secs(60), || {
        let now = ids_of(&mut admin, "celeriac-next");
        now.iter().any(|id| before.contains(id)).then_some(())
    });
    assert!(
        reauthenticated.is_some(),
        "no connection re-authenticated: {:?}",
        clients(&mut admin)
    );
    // The old user goes away (its remaining connections with it); the worker still works.
    acl(&mut admin, &["DELUSER", "celeriac"]);
    assert_eq!(world.py(ROUND_TRIP).trim(), expected);
    assert!(
        eventually(Duration::from_secs(60), || invalidations_subscribed(
            &mut admin
        )
        .then_some(()))
        .is_some(),
        "the cache did not resubscribe to invalidations"
    );

    worker
        .wait_for_log("Redis credentials changed", Duration::from_secs(30))
        .unwrap();
    let log = worker.log();
    for secret in ["first-pw", "second-pw", "third-pw"] {
        assert!(!log.contains(secret), "{secret} in the worker's log");
    }
}
