//! Group results as Celery stores them: result tuples (`as_tuple()`) and the
//! `celery-taskset-meta-<gid>` key written by `GroupResult.save()`.

use serde_json::{Map, Value};

use super::python_json;
use super::store::{BackendError, ResultBackend};

/// `AsyncResult(id).as_tuple()`: `[["<id>", null], null]`.
pub fn task_tuple(task_id: &str) -> Value {
    Value::Array(vec![
        Value::Array(vec![Value::from(task_id), Value::Null]),
        Value::Null,
    ])
}

/// `GroupResult(gid, members).as_tuple()`: `[["<gid>", null], [<member tuples>]]`.
pub fn group_tuple(group_id: &str, members: Vec<Value>) -> Value {
    Value::Array(vec![
        Value::Array(vec![Value::from(group_id), Value::Null]),
        Value::Array(members),
    ])
}

/// A result tree read back from a tuple: a task id, or a group of trees.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultTree {
    /// One task's result.
    Task(String),
    /// A group (its id, then its members in order).
    Group(String, Vec<ResultTree>),
}

impl ResultTree {
    /// Read an `as_tuple()` value; `None` when it is not one.
    pub fn from_tuple(v: &Value) -> Option<Self> {
        let [head, tail] = v.as_array()?.as_slice() else {
            return None;
        };
        let id = head.as_array()?.first()?.as_str()?.to_string();
        match tail {
            Value::Array(members) => Some(ResultTree::Group(
                id,
                members
                    .iter()
                    .map(ResultTree::from_tuple)
                    .collect::<Option<_>>()?,
            )),
            _ => Some(ResultTree::Task(id)),
        }
    }
}

impl ResultBackend {
    /// `GroupResult.save()`: `SET celery-taskset-meta-<gid> {"result": <group tuple>}` with the
    /// result expiry, and PUBLISH it.
    pub async fn save_group(
        &self,
        group_id: &str,
        members: Vec<Value>,
    ) -> Result<(), BackendError> {
        let mut meta = Map::new();
        meta.insert("result".into(), group_tuple(group_id, members));
        let bytes = self.encode_value(python_json::to_vec(&Value::Object(meta)))?;
        let key = self.keys().group(group_id);
        let ttl = self
            .options()
            .result_expires
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let mut pipe = redis::pipe();
        pipe.atomic();
        match ttl {
            0 => pipe.set(&key, &bytes).ignore(),
            t => pipe.set_ex(&key, &bytes, t).ignore(),
        };
        pipe.publish(&key, &bytes).ignore();
        let mut conn = self.connection();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// `GroupResult.restore(gid)`: the saved group's tree, or `None` when nothing was saved.
    pub async fn restore_group(&self, group_id: &str) -> Result<Option<ResultTree>, BackendError> {
        let key = self.keys().group(group_id);
        let mut conn = self.connection();
        let raw: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let Some(raw) = raw else { return Ok(None) };
        let unreadable = |reason: &str| BackendError::UnreadableMeta {
            key: key.clone(),
            reason: reason.to_string(),
        };
        let v = self.decode_value(&raw, &key)?;
        let tree = v
            .get("result")
            .and_then(ResultTree::from_tuple)
            .ok_or_else(|| unreadable("not a saved GroupResult"))?;
        Ok(Some(tree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tuples_like_celery_and_back() {
        let g = group_tuple("g", vec![task_tuple("a"), task_tuple("b")]);
        assert_eq!(
            python_json::to_vec(&g),
            br#"[["g", null], [[["a", null], null], [["b", null], null]]]"#.to_vec()
        );
        assert_eq!(
            ResultTree::from_tuple(&g),
            Some(ResultTree::Group(
                "g".into(),
                vec![ResultTree::Task("a".into()), ResultTree::Task("b".into())]
            ))
        );
        assert_eq!(ResultTree::from_tuple(&json!([1, 2])), None);
    }
}
