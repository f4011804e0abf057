//! Chord keys against a real Redis: parts counted once per `task_id:index` (a redelivered part
//! does not double count), one claim, `done` after cleanup, late parts ignored; parts written by
//! a ≤ 5.6-style pipeline (no `.d`) are counted too; `GroupResult.save()` read back by Python.

mod backend_support;

use anyhow::Result;
use backend_support::Env;
use celeriac_broker_bridge::backend::group::{task_tuple, ResultTree};
use celeriac_broker_bridge::backend::{BackendOptions, ChordPart, PartReturn, TaskState};
use celeriac_testkit::run_python;
use serde_json::{json, Value};

fn part(gid: &str, tid: &str, index: i64, result: Value) -> ChordPart {
    ChordPart {
        group_id: gid.into(),
        task_id: tid.into(),
        group_index: Some(index),
        state: TaskState::Success,
        result,
    }
}

#[tokio::test]
async fn redelivered_parts_count_once_and_one_worker_claims() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let b = env.backend.clone();
    b.set_chord_size("g", 3).await?;
    assert_eq!(
        b.chord_part_return(&part("g", "a", 0, json!(10)), 3.0)
            .await?,
        PartReturn::Pending
    );
    // The same member redelivered, even with another result: not counted again.
    assert_eq!(
        b.chord_part_return(&part("g", "a", 0, json!(11)), 3.0)
            .await?,
        PartReturn::Pending
    );
    // A ≤ 5.6 worker's part: a bare ZADD, no dedup entry.
    let _: i64 = redis::cmd("ZADD")
        .arg("celery-taskset-meta-g.j")
        .arg(2)
        .arg(r#"[1, "c", "SUCCESS", 30]"#)
        .query_async(&mut env.conn)
        .await?;
    let PartReturn::Complete(claim) = b
        .chord_part_return(&part("g", "b", 1, json!(20)), 3.0)
        .await?
    else {
        panic!("the last part should complete the chord");
    };
    let results: Vec<Value> = claim.parts.iter().map(|p| p.result.clone()).collect();
    assert_eq!(results, vec![json!(10), json!(20), json!(30)]);
    // A redelivery of the last part while the claim is held: no second claim.
    assert_eq!(
        b.chord_part_return(&part("g", "b", 1, json!(20)), 3.0)
            .await?,
        PartReturn::Pending
    );
    assert!(b.chord_extend_claim(&claim).await?);
    assert!(b.chord_finish(&claim).await?);
    assert_eq!(
        env.raw("celery-taskset-meta-g.c").await?,
        Some(b"done".to_vec())
    );
    for suffix in [".j", ".s", ".d", ".t"] {
        assert_eq!(
            env.raw(&format!("celery-taskset-meta-g{suffix}")).await?,
            None
        );
    }
    assert_eq!(
        b.chord_part_return(&part("g", "c", 2, json!(30)), 3.0)
            .await?,
        PartReturn::AlreadyDone
    );
    Ok(())
}

#[tokio::test]
async fn saved_group_reads_back_in_python() -> Result<()> {
    let env = Env::start(BackendOptions::default()).await?;
    env.backend
        .save_group("gid", vec![task_tuple("x"), task_tuple("y")])
        .await?;
    assert_eq!(
        env.backend.restore_group("gid").await?,
        Some(ResultTree::Group(
            "gid".into(),
            vec![ResultTree::Task("x".into()), ResultTree::Task("y".into())]
        ))
    );
    let out = run_python(
        "import sys\nfrom celery import Celery\nfrom celery.result import GroupResult\napp = Celery('r', broker=sys.argv[1], backend=sys.argv[1])\ng = GroupResult.restore('gid', app=app)\nprint(g.id, [r.id for r in g.results])",
        &[&env.url],
        &[],
    )?;
    assert_eq!(out.trim(), "gid ['x', 'y']");
    Ok(())
}

#[tokio::test]
async fn a_part_return_repeated_with_its_token_keeps_the_claim_it_took() -> Result<()> {
    let env = Env::start(BackendOptions::default()).await?;
    let b = env.backend.clone();
    b.set_chord_size("r", 2).await?;
    assert_eq!(
        b.chord_part_return(&part("r", "a", 0, json!(1)), 3.0)
            .await?,
        PartReturn::Pending
    );
    let token = celeriac_broker_bridge::backend::ResultBackend::new_claim_token();
    let last = part("r", "b", 1, json!(2));
    // The first call completes the chord and takes the claim; say its reply was lost.
    assert!(matches!(
        b.chord_part_return_with_token(&last, 3.0, &token).await?,
        PartReturn::Complete(_)
    ));
    // The caller's retry with the same token gets the claim back...
    let PartReturn::Complete(claim) = b.chord_part_return_with_token(&last, 3.0, &token).await?
    else {
        panic!("the repeated call should get its claim");
    };
    assert_eq!(claim.token, token);
    assert_eq!(claim.parts.len(), 2);
    // ...while a redelivery of the same part elsewhere (another token) does not.
    assert_eq!(b.chord_part_return(&last, 3.0).await?, PartReturn::Pending);
    Ok(())
}
