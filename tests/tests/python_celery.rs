//! The test venv has real Celery and it talks to a private Redis.

use celeriac_testkit::{run_python, RedisServer};

#[test]
fn real_celery_round_trips_through_private_redis() {
    let redis = RedisServer::start().unwrap();
    let out = run_python(
        r#"
import sys, celery
from celery import Celery
app = Celery("t", broker=sys.argv[1])
r = app.send_task("demo.add", args=(2, 3))
with app.connection_for_write() as conn:
    print(celery.__version__, conn.default_channel.client.llen("celery"))
"#,
        &[&redis.url(0)],
        &[],
    )
    .unwrap();
    assert_eq!(out.trim(), "5.7.0 1");
}
