use celeriac_broker_bridge::codec::{Signature, TaskMessage};
use serde_json::{json, Map, Value};

use super::*;

fn sig(v: Value) -> Signature {
    Signature::from_value(&v, "sig").unwrap()
}

fn msg_with(callbacks: Vec<Signature>, chain: Vec<Signature>) -> TaskMessage {
    let mut m = TaskMessage::new("t1", "tasks.add", vec![json!(1)], Map::new());
    m.root_id = Some("root".into());
    m.callbacks = callbacks;
    m.chain = chain;
    m
}

#[test]
fn callback_gets_the_result_prepended_unless_immutable() {
    let cb =
        sig(json!({"task": "tasks.mul", "args": [2], "options": {"task_id": "c1", "queue": "q"}}));
    let imm = sig(json!({"task": "tasks.log", "args": ["x"], "immutable": true}));
    let plan = success_plan(&msg_with(vec![cb], vec![]), &json!(5)).unwrap();
    let m = &plan.messages[0];
    assert_eq!(
        (m.id.as_str(), m.args.clone()),
        ("c1", vec![json!(5), json!(2)])
    );
    assert_eq!(m.root_id.as_deref(), Some("root"));
    assert_eq!(m.parent_id.as_deref(), Some("t1"));
    assert_eq!(m.routing_key.as_deref(), Some("q"));
    assert_eq!(plan.children, vec![json!([["c1", null], null])]);
    let plan = success_plan(&msg_with(vec![imm], vec![]), &json!(5)).unwrap();
    assert_eq!(plan.messages[0].args, vec![json!("x")]);
}

#[test]
fn several_callbacks_are_one_group() {
    let a = sig(json!({"task": "a", "args": []}));
    let b = sig(json!({"task": "b", "args": []}));
    let plan = success_plan(&msg_with(vec![a, b], vec![]), &json!(1)).unwrap();
    let gid = plan.messages[0].group.clone().unwrap();
    assert_eq!(plan.messages[1].group.as_deref(), Some(gid.as_str()));
    let idx: Vec<_> = plan.messages.iter().map(|m| m.group_index).collect();
    assert_eq!(idx, vec![Some(0), Some(1)]);
}

#[test]
fn chain_applies_the_last_element_with_the_rest() {
    let s3 = sig(json!({"task": "s3", "args": [], "options": {"task_id": "i3"}}));
    let s2 = sig(json!({"task": "s2", "args": [10], "options": {"task_id": "i2"}}));
    let plan = success_plan(&msg_with(vec![], vec![s3.clone(), s2]), &json!(4)).unwrap();
    assert_eq!(plan.messages.len(), 1);
    let m = &plan.messages[0];
    assert_eq!(m.id, "i2");
    assert_eq!(m.args, vec![json!(4), json!(10)]);
    assert_eq!(m.chain, vec![s3]);
}

#[test]
fn chord_step_publishes_header_with_body_and_size() {
    let chord = sig(json!({
        "task": "celery.chord", "args": [], "subtask_type": "chord", "options": {"task_id": "g"},
        "kwargs": {"kwargs": {}, "body": {"task": "tsum", "args": [], "options": {"task_id": "b"}},
                   "header": {"task": "celery.group", "subtask_type": "group", "options": {"task_id": "g"},
                              "kwargs": {"tasks": [
                                  {"task": "mul", "args": [2], "options": {"task_id": "h0"}},
                                  {"task": "mul", "args": [3], "options": {"task_id": "h1"}, "immutable": true}]}}}}));
    let after = sig(json!({"task": "last", "args": [], "options": {"task_id": "z"}}));
    let plan = success_plan(&msg_with(vec![], vec![after.clone(), chord]), &json!(7)).unwrap();
    assert_eq!(plan.chord_sizes, vec![("g".to_string(), 2)]);
    let args: Vec<_> = plan.messages.iter().map(|m| m.args.clone()).collect();
    assert_eq!(args, vec![vec![json!(7), json!(2)], vec![json!(3)]]);
    for (i, m) in plan.messages.iter().enumerate() {
        assert_eq!(m.group.as_deref(), Some("g"));
        assert_eq!(m.group_index, Some(i as i64));
        let body = m.chord.as_ref().unwrap();
        assert_eq!(body.task_id(), Some("b"));
        assert_eq!(body.options["group_id"], json!("g"));
        assert_eq!(body.options["chain"], json!([after.to_value()]));
        assert!(m.chain.is_empty());
    }
}

/// Celery's `_freeze_unroll` and `chord._descend`: a group in the header is unrolled into it;
/// a chain ending with a group returns one part per task of that group, whose tasks keep the
/// chord's group id (a frozen one stays) and carry its body.
#[test]
fn groups_in_a_chord_header_are_its_parts() {
    let t = |name: &str| json!({"task": name, "args": [], "options": {"task_id": name}});
    let chord = sig(json!({
        "task": "celery.chord", "args": [], "subtask_type": "chord", "options": {"task_id": "g"},
        "kwargs": {"kwargs": {}, "body": {"task": "tsum", "args": [], "options": {"task_id": "b"}},
                   "header": [
                       {"task": "celery.group", "subtask_type": "group", "args": [],
                        "kwargs": {"tasks": [t("a"), t("b2")]}},
                       {"task": "celery.chain", "subtask_type": "chain", "args": [],
                        "kwargs": {"tasks": [t("c"), {"task": "celery.group", "subtask_type": "group",
                            "args": [], "options": {"task_id": "inner"},
                            "kwargs": {"tasks": [t("d"), {"task": "e", "args": [],
                                "options": {"task_id": "e", "group_id": "frozen"}}]}}]}}]}}));
    let plan = success_plan(&msg_with(vec![], vec![chord]), &json!(0)).unwrap();
    assert_eq!(plan.chord_sizes, vec![("g".to_string(), 4)]);
    let parts: Vec<_> = plan
        .messages
        .iter()
        .map(|m| (m.id.as_str(), m.group.as_deref(), m.group_index))
        .collect();
    assert_eq!(
        parts,
        vec![
            ("a", Some("g"), Some(0)),
            ("b2", Some("g"), Some(1)),
            ("c", None, None)
        ]
    );
    // The chain's group, applied after `c`, with the options the chord gave it.
    let c = &plan.messages[2];
    let mut rest = success_plan(c, &json!(1)).unwrap();
    let members: Vec<_> = rest
        .messages
        .iter()
        .map(|m| (m.id.as_str(), m.group.as_deref(), m.group_index))
        .collect();
    assert_eq!(
        members,
        vec![("d", Some("g"), Some(0)), ("e", Some("frozen"), Some(1))]
    );
    for m in rest.messages.drain(..) {
        assert_eq!(m.chord.unwrap().task_id(), Some("b"));
    }
    assert_eq!(
        rest.children,
        vec![json!([
            ["inner", null],
            [[["d", null], null], [["e", null], null]]
        ])]
    );
}

/// Celery 5.7's `_add_body_callbacks`: a chord step's `link` and `link_error` go to its body.
#[test]
fn a_chord_steps_callbacks_go_to_its_body() {
    let cb = json!({"task": "echo", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false});
    let eb = json!({"task": "eb", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false});
    let chord = |body: Value| {
        sig(json!({
            "task": "celery.chord", "args": [], "subtask_type": "chord",
            "options": {"task_id": "g", "link": [cb], "link_error": [eb]},
            "kwargs": {"kwargs": {}, "body": body,
                       "header": [{"task": "h", "args": [], "options": {"task_id": "h"}}]}}))
    };
    let plan = success_plan(
        &msg_with(vec![], vec![chord(json!({"task": "tsum", "args": []}))]),
        &json!(1),
    )
    .unwrap();
    let body = plan.messages[0].chord.clone().unwrap();
    assert_eq!(body.options["link"], json!([cb]));
    assert_eq!(body.options["link_error"], json!([eb]));
    let group = json!({"task": "celery.group", "subtask_type": "group", "args": [],
        "kwargs": {"tasks": [{"task": "a", "args": []}, {"task": "b", "args": []}]}});
    let plan = success_plan(&msg_with(vec![], vec![chord(group)]), &json!(1)).unwrap();
    let body = plan.messages[0].chord.clone().unwrap();
    let tasks = body.kwargs["tasks"].as_array().unwrap();
    let mut immutable = cb.clone();
    immutable["immutable"] = json!(true);
    assert_eq!(tasks[0]["options"]["link"], json!([immutable]));
    assert!(tasks[1]["options"].get("link").is_none());
    for t in tasks {
        assert_eq!(t["options"]["link_error"], json!([eb]));
    }
    assert!(body.options.get("link_error").is_none());
}

/// Celery applies each task of a group with the group's options: its `link_error` replaces theirs.
#[test]
fn a_groups_link_error_replaces_its_tasks_own() {
    let eb = json!({"task": "group_eb", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": true});
    let own = json!({"task": "own_eb", "args": []});
    let group = sig(
        json!({"task": "celery.group", "subtask_type": "group", "args": [],
        "options": {"link_error": [eb]},
        "kwargs": {"tasks": [{"task": "a", "args": [], "options": {"link_error": [own]}},
                             {"task": "b", "args": []}]}}),
    );
    let plan = success_plan(&msg_with(vec![group], vec![]), &json!(1)).unwrap();
    for m in &plan.messages {
        let errbacks: Vec<_> = m.errbacks.iter().map(|s| s.task.as_str()).collect();
        assert_eq!(errbacks, vec!["group_eb"], "{}", m.task);
    }
}

/// Celery's `_chain.tasks`: a chain's `link_error` goes to every task, its `link` to the last.
#[test]
fn a_chains_callbacks_go_to_its_tasks() {
    let eb = json!({"task": "eb", "args": []});
    let cb = json!({"task": "cb", "args": []});
    let chain = sig(
        json!({"task": "celery.chain", "subtask_type": "chain", "args": [],
        "options": {"link_error": [eb], "link": [cb]},
        "kwargs": {"tasks": [{"task": "a", "args": []}, {"task": "b", "args": []}]}}),
    );
    let plan = success_plan(&msg_with(vec![chain], vec![]), &json!(1)).unwrap();
    let m = &plan.messages[0];
    assert_eq!(m.task, "a");
    assert_eq!(m.errbacks[0].task, "eb");
    assert!(m.callbacks.is_empty());
    assert_eq!(m.chain[0].options["link_error"][0]["task"], "eb");
    assert_eq!(m.chain[0].options["link"][0]["task"], "cb");
}

#[test]
fn group_followed_by_a_step_becomes_a_chord() {
    let group = sig(
        json!({"task": "celery.group", "subtask_type": "group", "args": [],
        "kwargs": {"tasks": [{"task": "a", "args": []}, {"task": "b", "args": []}]}}),
    );
    let body = sig(json!({"task": "tsum", "args": []}));
    let chain = sig(
        json!({"task": "celery.chain", "subtask_type": "chain", "args": [],
        "kwargs": {"tasks": [group.to_value(), body.to_value()]}}),
    );
    let plan = success_plan(&msg_with(vec![chain], vec![]), &json!(1)).unwrap();
    assert_eq!(plan.chord_sizes.len(), 1);
    assert_eq!(plan.messages.len(), 2);
    assert!(plan
        .messages
        .iter()
        .all(|m| m.chord.as_ref().unwrap().task == "tsum"));
}

#[test]
fn chain_of_three_carries_the_rest_reversed() {
    let chain = sig(
        json!({"task": "celery.chain", "subtask_type": "chain", "args": [],
        "kwargs": {"tasks": [{"task": "a", "args": []}, {"task": "b", "args": []}, {"task": "c", "args": []}]}}),
    );
    let plan = success_plan(&msg_with(vec![chain], vec![]), &json!(1)).unwrap();
    let m = &plan.messages[0];
    assert_eq!(m.task, "a");
    let names: Vec<_> = m.chain.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(names, vec!["c", "b"]);
}

#[test]
fn a_chains_own_args_follow_the_prefix_unless_it_is_immutable() {
    let tasks = json!([{"task": "a", "args": [10]}, {"task": "b", "args": []}]);
    let mut chain = chain_of(tasks.clone());
    chain["args"] = json!([5]);
    let plan = success_plan(&msg_with(vec![sig(chain.clone())], vec![]), &json!(1)).unwrap();
    assert_eq!(plan.messages[0].args, vec![json!(1), json!(5), json!(10)]);
    chain["immutable"] = json!(true);
    let plan = success_plan(&msg_with(vec![sig(chain)], vec![]), &json!(1)).unwrap();
    assert_eq!(plan.messages[0].args, vec![json!(5), json!(10)]);
    let mut plain = chain_of(tasks);
    plain["immutable"] = json!(true);
    let plan = success_plan(&msg_with(vec![sig(plain)], vec![]), &json!(1)).unwrap();
    assert_eq!(plan.messages[0].args, vec![json!(10)]);
}

#[test]
fn errbacks_are_a_group_called_with_the_task_id() {
    let eb = sig(json!({"task": "on_err", "args": ["x"]}));
    let plan = errback_plan(&[eb], "failed", &Parent::default()).unwrap();
    let m = &plan.messages[0];
    assert_eq!(m.args, vec![json!("failed"), json!("x")]);
    assert!(m.group.is_some());
    assert_eq!(m.group_index, Some(0));
}

#[test]
fn replacement_keeps_id_and_inherits() {
    let mut m = msg_with(
        vec![sig(json!({"task": "cb", "args": []}))],
        vec![sig(
            json!({"task": "next", "args": [], "options": {"task_id": "n1"}}),
        )],
    );
    m.group = Some("g".into());
    m.group_index = Some(3);
    m.chord = Some(sig(json!({"task": "body", "args": []})));
    m.errbacks = vec![sig(json!({"task": "eb", "args": []}))];
    m.replaced_task_nesting = 1;
    let plan = replacement(&m, &sig(json!({"task": "other", "args": [9]}))).unwrap();
    let [new] = plan.messages.as_slice() else {
        panic!("one message: {plan:?}")
    };
    assert_eq!(new.id, "t1");
    assert_eq!(
        (new.root_id.as_deref(), new.parent_id.as_deref()),
        (Some("root"), Some("t1"))
    );
    assert_eq!(new.replaced_task_nesting, 2);
    assert_eq!(
        (new.group.as_deref(), new.group_index),
        (Some("g"), Some(3))
    );
    assert_eq!(new.chord, m.chord);
    assert_eq!(new.callbacks, m.callbacks);
    assert_eq!(new.errbacks, m.errbacks);
    assert_eq!(new.args, vec![json!(9)]);
    // The rest of the chain follows, each step with the new nesting.
    let [next] = new.chain.as_slice() else {
        panic!("one chain step: {:?}", new.chain)
    };
    assert_eq!(next.task_id(), Some("n1"));
    assert_eq!(next.options["replaced_task_nesting"], json!(2));
}

fn chain_of(tasks: Value) -> Value {
    json!({"task": "celery.chain", "subtask_type": "chain", "args": [], "kwargs": {"tasks": tasks}})
}

fn group_of(tasks: Value) -> Value {
    json!({"task": "celery.group", "subtask_type": "group", "args": [], "kwargs": {"tasks": tasks}})
}

#[test]
fn replacement_by_a_chain_gives_the_id_to_its_last_task() {
    let mut m = msg_with(
        vec![sig(json!({"task": "cb", "args": []}))],
        vec![sig(
            json!({"task": "after", "args": [], "options": {"task_id": "a1"}}),
        )],
    );
    m.errbacks = vec![sig(json!({"task": "eb", "args": []}))];
    let own_link = json!({"task": "own_cb", "args": []});
    let mut c = chain_of(json!([
        {"task": "first", "args": [1]},
        {"task": "second", "args": []},
    ]));
    c["options"] = json!({"link": [own_link]});
    let plan = replacement(&m, &sig(c)).unwrap();
    let [first] = plan.messages.as_slice() else {
        panic!("one message: {plan:?}")
    };
    assert_eq!(first.task, "first");
    assert_ne!(first.id, "t1");
    assert_eq!(first.replaced_task_nesting, 1);
    assert_eq!(
        first.errbacks.len(),
        1,
        "errbacks on every task of the chain"
    );
    assert!(
        first.callbacks.is_empty(),
        "callbacks on the last task only"
    );
    // msg.chain is stored reversed: the next step last.
    let steps: Vec<&str> = first.chain.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(steps, ["after", "second"]);
    let second = &first.chain[1];
    assert_eq!(second.task_id(), Some("t1"));
    let links: Vec<&str> = second.options["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["task"].as_str().unwrap())
        .collect();
    assert_eq!(links, ["own_cb", "cb"]);
    assert_eq!(second.options["link_error"][0]["task"], "eb");
    assert_eq!(second.options["replaced_task_nesting"], json!(1));
    assert_eq!(first.chain[0].options["replaced_task_nesting"], json!(1));
    assert!(first.chain[0].options.get("link_error").is_none());
}

#[test]
fn replacement_by_a_group_is_a_chord_accumulating_its_results() {
    let mut m = msg_with(vec![], vec![]);
    m.group = Some("outer".into());
    m.group_index = Some(1);
    m.chord = Some(sig(json!({"task": "outer_body", "args": []})));
    let g = group_of(json!([{"task": "add", "args": [1, 1]}, {"task": "add", "args": [2, 2]}]));
    let plan = replacement(&m, &sig(g)).unwrap();
    assert_eq!(plan.messages.len(), 2);
    let (gid, size) = plan.chord_sizes[0].clone();
    assert_eq!(size, 2);
    let member = &plan.messages[1];
    assert_eq!(
        (member.group.as_deref(), member.group_index),
        (Some(gid.as_str()), Some(1))
    );
    let body = member.chord.as_ref().expect("a chord member");
    assert_eq!(body.task, crate::task_api::builtins::ACCUMULATE);
    assert_eq!(body.kwargs["index"], json!(0));
    assert_eq!(body.task_id(), Some("t1"));
    // The body takes the replaced task's place in its own chord.
    assert_eq!(body.options["group_id"], json!("outer"));
    assert_eq!(body.options["group_index"], json!(1));
    assert_eq!(body.options["chord"]["task"], "outer_body");
    assert_eq!(body.options["replaced_task_nesting"], json!(1));
    assert_eq!(plan.children, vec![json!([["t1", null], null])]);
}

#[test]
fn a_chain_ending_with_a_group_ends_with_an_accumulating_chord() {
    let c = chain_of(json!([
        {"task": "add", "args": [1, 2]},
        group_of(json!([{"task": "add", "args": [1]}, {"task": "add", "args": [1]}])),
    ]));
    let plan = replacement(&msg_with(vec![], vec![]), &sig(c)).unwrap();
    let [first] = plan.messages.as_slice() else {
        panic!("one message: {plan:?}")
    };
    let [chord] = first.chain.as_slice() else {
        panic!("one step after: {:?}", first.chain)
    };
    assert_eq!(chord.subtask_type.as_deref(), Some("chord"));
    assert_eq!(
        chord.kwargs["body"]["task"],
        crate::task_api::builtins::ACCUMULATE
    );
    assert_eq!(chord.kwargs["body"]["options"]["task_id"], "t1");
}

#[test]
fn replacement_refusals_as_celery() {
    let m = msg_with(vec![], vec![]);
    let empty = replacement(&m, &sig(chain_of(json!([])))).unwrap_err();
    assert_eq!(empty.reason, "Cannot replace with an empty chain");
    let in_chord =
        sig(json!({"task": "x", "args": [], "options": {"chord": {"task": "b", "args": []}}}));
    assert_eq!(
        replacement(&m, &in_chord).unwrap_err().reason,
        "A signature replacing a task must not be part of a chord"
    );
    // A replacement with its own id keeps it, as Celery's `freeze(_id)`.
    let own = sig(json!({"task": "x", "args": [], "options": {"task_id": "mine"}}));
    assert_eq!(replacement(&m, &own).unwrap().messages[0].id, "mine");
}

#[test]
fn bad_signatures_are_errors_not_panics() {
    let chain = sig(
        json!({"task": "celery.chain", "subtask_type": "chain", "args": [], "kwargs": {"tasks": []}}),
    );
    assert!(success_plan(&msg_with(vec![chain], vec![]), &json!(1)).is_err());
    let chord = sig(
        json!({"task": "celery.chord", "subtask_type": "chord", "args": [], "kwargs": {"header": 3}}),
    );
    assert!(success_plan(&msg_with(vec![chord], vec![]), &json!(1)).is_err());
}

#[test]
fn chord_error_message_like_celery() {
    let part = celeriac_broker_bridge::backend::PartResult {
        task_id: "abc".into(),
        state: "FAILURE".into(),
        result: json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}),
    };
    let e = chord::dependency_error(&part);
    assert_eq!(e.exc_type, "ChordError");
    assert_eq!(
        e.exc_message,
        vec![json!("Dependency abc raised ValueError('boom')")]
    );
    assert_eq!(
        chord::exception_repr(&json!({"exc_type": "E", "exc_message": [1, "a"]})),
        "E(1, 'a')"
    );
}
