//! The tasks of Celery's `t/integration/tasks.py` that replace themselves with a canvas
//! (`self.replace(chain(...))`, a group) or send canvases from a task (`apply_async`,
//! `add_to_chord`), under the same names; the Python source is quoted in each doc comment.

use celeriac_worker::client::{chain, chord, group, Signature};
use celeriac_worker::{TaskContext, TaskError, WorkerBuilder};
use serde_json::Value;

use super::redis_conn;

fn task(name: &str) -> Signature {
    Signature::new(format!("t.integration.tasks.{name}"))
}

/// `add.s(*args)`.
fn add(args: impl IntoIterator<Item = Value>) -> Signature {
    task("add").args(args)
}

/// `redis_connection.rpush(key, text)`.
async fn rpush(key: &str, text: &str) -> Result<(), TaskError> {
    let mut conn = redis_conn().await?;
    redis::cmd("RPUSH")
        .arg(key)
        .arg(text)
        .query_async::<()>(&mut conn)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(())
}

/// `redis_echo.s()`, or with `link_msg`: `redis_echo.si(link_msg)` (Python sets its args and
/// makes it immutable).
fn echo_link(link_msg: Value) -> Signature {
    match link_msg {
        Value::Null => task("redis_echo"),
        msg => task("redis_echo").arg(msg).immutable(),
    }
}

/// `def add_replaced_with_chain(self, x, y): raise self.replace(chain(add.s(x, y), identity.s()))`
#[celeriac_worker::task(name = "t.integration.tasks.add_replaced_with_chain")]
async fn add_replaced_with_chain(x: Value, y: Value) -> Result<Value, TaskError> {
    Err(TaskError::replace(chain([add([x, y]), task("identity")])))
}

/// ```python
/// def replace_with_chain(self, *args, link_msg=None):
///     c = chain(identity.s(*args), identity.s())
///     link_sig = redis_echo.s()
///     if link_msg is not None:
///         link_sig.args = (link_msg,)
///         link_sig.set(immutable=True)
///     c.link(link_sig)
///     return self.replace(c)
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.replace_with_chain")]
async fn replace_with_chain(
    #[args] args: Vec<Value>,
    #[default(Value::Null)] link_msg: Value,
) -> Result<Value, TaskError> {
    let c = chain([task("identity").args(args), task("identity")]).link(echo_link(link_msg));
    Err(TaskError::replace(c))
}

/// ```python
/// def replace_with_chain_which_raises(self, *args, link_msg=None):
///     c = chain(identity.s(*args), raise_error.s())
///     link_sig = redis_echo.s()  # args and immutable as above
///     c.link_error(link_sig)
///     return self.replace(c)
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.replace_with_chain_which_raises")]
async fn replace_with_chain_which_raises(
    #[args] args: Vec<Value>,
    #[default(Value::Null)] link_msg: Value,
) -> Result<Value, TaskError> {
    let c =
        chain([task("identity").args(args), task("raise_error")]).link_error(echo_link(link_msg));
    Err(TaskError::replace(c))
}

/// `def replace_with_empty_chain(self, *_): return self.replace(chain())`
#[celeriac_worker::task(name = "t.integration.tasks.replace_with_empty_chain")]
async fn replace_with_empty_chain(#[args] ignored: Vec<Value>) -> Result<Value, TaskError> {
    let _ = ignored;
    Err(TaskError::replace(chain([])))
}

/// `def replace_with_chain_which_contains_a_group(self):`
/// `return self.replace(chain(add.s(1, 2), group(add.s(1), add.s(1))))`
#[celeriac_worker::task(name = "t.integration.tasks.replace_with_chain_which_contains_a_group")]
async fn replace_with_chain_which_contains_a_group() -> Result<Value, TaskError> {
    let one = || add([Value::from(1)]);
    let c = chain([add([Value::from(1), Value::from(2)]), group([one(), one()])]);
    Err(TaskError::replace(c))
}

/// `def add_to_all(self, nums, val): raise self.replace(group(*[add.s(num, val) for num in nums]))`
#[celeriac_worker::task(name = "t.integration.tasks.add_to_all")]
async fn add_to_all(nums: Vec<Value>, val: Value) -> Result<Value, TaskError> {
    let adds = nums.into_iter().map(|num| add([num, val.clone()]));
    Err(TaskError::replace(group(adds)))
}

/// ```python
/// def add_to_all_to_chord(self, nums, val):
///     for num in nums:
///         self.add_to_chord(add.s(num, val))
///     return 0
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.add_to_all_to_chord")]
async fn add_to_all_to_chord(
    ctx: TaskContext,
    nums: Vec<Value>,
    val: Value,
) -> Result<Value, TaskError> {
    let client = ctx.client()?;
    for num in nums {
        client.add_to_chord(&add([num, val.clone()])).await?;
    }
    Ok(Value::from(0))
}

/// ```python
/// def add_chord_to_chord(self, nums, val):
///     subtasks = [add.s(num, val) for num in nums]
///     self.add_to_chord(group(subtasks) | tsum.s())
///     return 0
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.add_chord_to_chord")]
async fn add_chord_to_chord(
    ctx: TaskContext,
    nums: Vec<Value>,
    val: Value,
) -> Result<Value, TaskError> {
    let adds = nums.into_iter().map(|num| add([num, val.clone()]));
    ctx.client()?
        .add_to_chord(&chord(adds, task("tsum")))
        .await?;
    Ok(Value::from(0))
}

/// `def chain_add(x, y): (add.s(x, x) | add.s(y)).apply_async()`
#[celeriac_worker::task(name = "t.integration.tasks.chain_add")]
async fn chain_add(ctx: TaskContext, x: Value, y: Value) -> Result<Value, TaskError> {
    ctx.client()?
        .send(&chain([add([x.clone(), x]), add([y])]))
        .await?;
    Ok(Value::Null)
}

/// `def chord_add(x, y): chord(add.s(x, x), add.s(y)).apply_async()`
#[celeriac_worker::task(name = "t.integration.tasks.chord_add")]
async fn chord_add(ctx: TaskContext, x: Value, y: Value) -> Result<Value, TaskError> {
    ctx.client()?
        .send(&chord([add([x.clone(), x])], add([y])))
        .await?;
    Ok(Value::Null)
}

/// ```python
/// def build_chain_inside_task(self):
///     test_chain = (add.s(1, 1) | add.s(2) | group(add.s(3), add.s(4)) | add.s(5))
///     result = test_chain()
///     return result
/// ```
/// (A returned `AsyncResult` is stored as its `as_tuple()`.)
#[celeriac_worker::task(name = "t.integration.tasks.build_chain_inside_task")]
async fn build_chain_inside_task(ctx: TaskContext) -> Result<Value, TaskError> {
    let n = |i: i64| Value::from(i);
    let test_chain = chain([
        add([n(1), n(1)]),
        add([n(2)]),
        group([add([n(3)]), add([n(4)])]),
        add([n(5)]),
    ]);
    Ok(ctx.client()?.send(&test_chain).await?.as_tuple())
}

/// ```python
/// def second_order_replace1(self, state=False):
///     redis_connection = get_redis_connection()
///     if not state:
///         redis_connection.rpush('redis-echo', 'In A')
///         new_task = chain(second_order_replace2.s(), second_order_replace1.si(state=True))
///         raise self.replace(new_task)
///     else:
///         redis_connection.rpush('redis-echo', 'Out A')
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.second_order_replace1")]
async fn second_order_replace1(#[default(false)] state: bool) -> Result<Value, TaskError> {
    if state {
        rpush("redis-echo", "Out A").await?;
        return Ok(Value::Null);
    }
    rpush("redis-echo", "In A").await?;
    let new_task = chain([
        task("second_order_replace2"),
        task("second_order_replace1")
            .kwarg("state", true)
            .immutable(),
    ]);
    Err(TaskError::replace(new_task))
}

/// ```python
/// def second_order_replace2(self, state=False):
///     redis_connection = get_redis_connection()
///     if not state:
///         redis_connection.rpush('redis-echo', 'In B')
///         new_task = chain(redis_echo.s("In/Out C"), second_order_replace2.si(state=True))
///         raise self.replace(new_task)
///     else:
///         redis_connection.rpush('redis-echo', 'Out B')
/// ```
#[celeriac_worker::task(name = "t.integration.tasks.second_order_replace2")]
async fn second_order_replace2(#[default(false)] state: bool) -> Result<Value, TaskError> {
    if state {
        rpush("redis-echo", "Out B").await?;
        return Ok(Value::Null);
    }
    rpush("redis-echo", "In B").await?;
    let new_task = chain([
        task("redis_echo").arg("In/Out C"),
        task("second_order_replace2")
            .kwarg("state", true)
            .immutable(),
    ]);
    Err(TaskError::replace(new_task))
}

/// ```python
/// class StampOnReplace(StampingVisitor):
///     stamp = {"StampOnReplace": "This is the replaced task"}
/// class StampedTaskOnReplace(Task):
///     def on_replace(self, sig):
///         sig.stamp(StampOnReplace())
///         return super().on_replace(sig)
/// @shared_task(bind=True, base=StampedTaskOnReplace)
/// def replace_with_stamped_task(self, replace_with=None):
///     if replace_with is None:
///         replace_with = replaced_with_me.s()
///     self.replace(signature(replace_with))
/// ```
/// The `on_replace` hook is written inline: the signature is stamped before it replaces the
/// task (the same for a task with no chain after it, as the suite calls it).
#[celeriac_worker::task(name = "t.integration.tasks.replace_with_stamped_task")]
async fn replace_with_stamped_task(
    #[default(Value::Null)] replace_with: Value,
) -> Result<Value, TaskError> {
    let sig = match replace_with {
        Value::Null => task("replaced_with_me"),
        v => Signature::from_value(&v)
            .map_err(|e| TaskError::fail("TypeError", format!("not a signature: {e}")))?,
    };
    let stamped = sig.stamp("StampOnReplace", "This is the replaced task");
    Err(TaskError::replace(stamped))
}

/// Registers the tasks of this file.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(add_replaced_with_chain)
        .register(replace_with_chain)
        .register(replace_with_chain_which_raises)
        .register(replace_with_empty_chain)
        .register(replace_with_chain_which_contains_a_group)
        .register(add_to_all)
        .register(add_to_all_to_chord)
        .register(add_chord_to_chord)
        .register(chain_add)
        .register(chord_add)
        .register(build_chain_inside_task)
        .register(second_order_replace1)
        .register(second_order_replace2)
        .register(replace_with_stamped_task)
}
