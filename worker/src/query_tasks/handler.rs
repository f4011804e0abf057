//! One declarative query task as a [`Handler`]: bind the call's arguments to the declared
//! parameters, render the key, read through the cache.

use std::sync::Arc;

use celeriac_cache::{NamedSql, Source, SourceError};
use serde_json::{Map, Value};

use super::config::{QueryTaskConfig, ResultShape};
use crate::task_api::data::DataAccess;
use crate::task_api::Handler;
use crate::task_api::{PyException, TaskContext, TaskError, TaskFuture};

/// A `[[tasks]]` entry ready to run.
pub(crate) struct QueryTask {
    config: Arc<QueryTaskConfig>,
    sql: Arc<NamedSql>,
    source: Arc<dyn Source>,
    data: Option<Arc<DataAccess>>,
}

impl QueryTask {
    pub(crate) fn new(config: QueryTaskConfig, sql: NamedSql, source: Arc<dyn Source>) -> Self {
        QueryTask {
            config: Arc::new(config),
            sql: Arc::new(sql),
            source,
            data: None,
        }
    }

    pub(crate) fn with_data(mut self, data: Arc<DataAccess>) -> Self {
        self.data = Some(data);
        self
    }

    /// The Celery task name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }
}

fn type_error(message: String) -> TaskError {
    TaskError::Fail(PyException::new("TypeError", message))
}

/// A call of a query task bound to its declaration: what the cache and the source receive.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundCall {
    /// The argument of each declared parameter, by name (scalars only).
    pub values: Map<String, Value>,
    /// The rendered cache key (before the cache's prefix and version).
    pub key: String,
    /// The SQL parameters in placeholder order; the SQL text itself never changes.
    pub params: Vec<Value>,
}

/// Bind a call's `args`/`kwargs` to a query task's parameters as Python would bind
/// `def task(p1, p2, ...)`, render its cache key and order its SQL parameters. Errors are the
/// `TypeError`/`ValueError` failures the caller receives.
pub fn bind_call(
    config: &QueryTaskConfig,
    sql: &NamedSql,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<BoundCall, TaskError> {
    let task = config.name.as_str();
    let values = bind_arguments(task, &config.params, args, kwargs)?;
    let key = config
        .key
        .render(&values)
        .map_err(|e| TaskError::fail("ValueError", format!("{task}: {e}")))?;
    let params = sql
        .bind(|name| values.get(name))
        .map_err(|e| TaskError::fail("ValueError", format!("{task}: {e}")))?;
    Ok(BoundCall {
        values,
        key,
        params,
    })
}

/// Python's rules for `def task(p1, p2, ...)`: positional in order, keywords by name.
fn bind_arguments(
    task: &str,
    params: &[String],
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Map<String, Value>, TaskError> {
    if args.len() > params.len() {
        return Err(type_error(format!(
            "{task}() takes {} positional arguments but {} were given",
            params.len(),
            args.len()
        )));
    }
    let mut values = Map::new();
    for (name, value) in params.iter().zip(args) {
        values.insert(name.clone(), value.clone());
    }
    for (name, value) in kwargs {
        if !params.contains(name) {
            return Err(type_error(format!(
                "{task}() got an unexpected keyword argument '{name}'"
            )));
        }
        if values.contains_key(name) {
            return Err(type_error(format!(
                "{task}() got multiple values for argument '{name}'"
            )));
        }
        values.insert(name.clone(), value.clone());
    }
    let missing: Vec<String> = params
        .iter()
        .filter(|p| !values.contains_key(*p))
        .map(|p| format!("'{p}'"))
        .collect();
    if !missing.is_empty() {
        return Err(type_error(format!(
            "{task}() missing {} required argument(s): {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    for (name, value) in &values {
        if value.is_array() || value.is_object() {
            return Err(TaskError::fail(
                "ValueError",
                format!(
                    "{task}(): argument '{name}' must be a scalar (null, bool, number or string)"
                ),
            ));
        }
    }
    Ok(values)
}

fn source_failure(task: &str, e: &SourceError) -> TaskError {
    let exc = match e {
        SourceError::Param { .. } => "ValueError",
        SourceError::Timeout(_) => "TimeoutError",
        SourceError::Connect { .. } => "ConnectionError",
        SourceError::Query(_) => "RuntimeError",
    };
    TaskError::fail(exc, format!("{task}: {e}"))
}

impl Handler for QueryTask {
    fn call(&self, ctx: TaskContext) -> TaskFuture {
        let config = Arc::clone(&self.config);
        let sql = Arc::clone(&self.sql);
        let source = Arc::clone(&self.source);
        let data = self.data.clone();
        Box::pin(async move {
            let task = config.name.as_str();
            let BoundCall { key, params, .. } = bind_call(&config, &sql, &ctx.args, &ctx.kwargs)?;
            let shape = config.result;
            let load = || async move {
                let rows = source.fetch(&sql.sql, &params).await?;
                match shape {
                    ResultShape::Many if rows.is_empty() => Ok(None),
                    ResultShape::Many => Ok(Some(Value::Array(
                        rows.into_iter().map(Value::Object).collect(),
                    ))),
                    ResultShape::One => match rows.len() {
                        0 => Ok(None),
                        1 => Ok(rows.into_iter().next().map(Value::Object)),
                        n => Err(SourceError::Query(format!(
                            "result = \"one\" but the query returned {n} rows"
                        ))),
                    },
                }
            };
            let value = match &data {
                Some(data) => data
                    .cache
                    .get_or_load(&key, &config.policy, load)
                    .await
                    .map_err(|e| source_failure(task, &e.0))?,
                None => load().await.map_err(|e| source_failure(task, &e))?,
            };
            Ok(match (value, shape) {
                (Some(v), _) => v,
                (None, ResultShape::One) => Value::Null,
                (None, ResultShape::Many) => Value::Array(Vec::new()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn exc(r: Result<Map<String, Value>, TaskError>) -> (String, String) {
        match r {
            Err(TaskError::Fail(e)) => (e.exc_type.clone(), e.message()),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn binds_like_python() {
        let kw = json!({"b": 2});
        let v = bind_arguments("t", &params(), &[json!(1)], kw.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(v), json!({"a": 1, "b": 2}));
        let none = Map::new();
        assert_eq!(
            exc(bind_arguments("t", &params(), &[json!(1)], &none)),
            (
                "TypeError".into(),
                "t() missing 1 required argument(s): 'b'".into()
            )
        );
        assert_eq!(
            exc(bind_arguments(
                "t",
                &params(),
                &[json!(1), json!(2), json!(3)],
                &none
            ))
            .1,
            "t() takes 2 positional arguments but 3 were given"
        );
        let dup = json!({"a": 1, "b": 2});
        assert!(exc(bind_arguments(
            "t",
            &params(),
            &[json!(1)],
            dup.as_object().unwrap()
        ))
        .1
        .contains("multiple values for argument 'a'"));
        let unknown = json!({"c": 1});
        assert!(exc(bind_arguments(
            "t",
            &params(),
            &[json!(1), json!(2)],
            unknown.as_object().unwrap()
        ))
        .1
        .contains("unexpected keyword argument 'c'"));
        assert_eq!(
            exc(bind_arguments(
                "t",
                &params(),
                &[json!([1]), json!(2)],
                &none
            ))
            .0,
            "ValueError"
        );
    }
}
