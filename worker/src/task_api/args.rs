//! Binding a Celery call's positional and keyword arguments to a task's typed parameters.
//!
//! A task declares its parameters as one `serde::Deserialize` type:
//! * a tuple, e.g. `(i64, i64)`, takes positional arguments only (`add.delay(2, 3)`);
//! * a struct takes positional arguments in field order, keyword arguments by field name, or both
//!   (`get_ticket.delay(7)`, `get_ticket.delay(ticket_id=7)`), as a Python function would;
//! * [`CallArgs`] takes the raw arguments untouched.
//!
//! Arguments that do not fit give Python's `TypeError` with a message naming the problem.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::PyException;

/// The call's arguments exactly as the producer sent them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallArgs {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// Deserialize the task's parameter type from a call's args and kwargs.
pub(crate) fn bind<T: DeserializeOwned + 'static>(
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<T, PyException> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<CallArgs>() {
        let raw = CallArgs {
            args: args.to_vec(),
            kwargs: kwargs.clone(),
        };
        let boxed: Box<dyn std::any::Any> = Box::new(raw);
        return Ok(*boxed.downcast::<T>().expect("type checked above"));
    }
    let input = if kwargs.is_empty() {
        Value::Array(args.to_vec())
    } else {
        let Some(fields) = struct_fields::<T>() else {
            return Err(type_error(
                "this task takes positional arguments only, but keyword arguments were given",
            ));
        };
        if args.len() > fields.len() {
            return Err(type_error(format!(
                "takes {} positional arguments but {} were given",
                fields.len(),
                args.len()
            )));
        }
        let mut map = Map::new();
        for (name, value) in fields.iter().zip(args) {
            map.insert((*name).to_string(), value.clone());
        }
        for (name, value) in kwargs {
            if map.contains_key(name) {
                return Err(type_error(format!(
                    "got multiple values for argument '{name}'"
                )));
            }
            map.insert(name.clone(), value.clone());
        }
        Value::Object(map)
    };
    match serde_json::from_value(input) {
        Ok(v) => Ok(v),
        // A task without parameters (`()`) called with none.
        Err(_) if args.is_empty() && kwargs.is_empty() => serde_json::from_value(Value::Null)
            .map_err(|e| type_error(format!("bad task arguments: {e}"))),
        Err(e) => Err(type_error(format!("bad task arguments: {e}"))),
    }
}

fn type_error(message: impl Into<String>) -> PyException {
    PyException::new("TypeError", message)
}

/// The field names of `T` when it deserializes as a struct, found by asking its `Deserialize`
/// implementation (serde passes the names to `deserialize_struct`).
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut probe = FieldProbe { fields: None };
    let _ = T::deserialize(&mut probe);
    probe.fields
}

struct FieldProbe {
    fields: Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe done")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        ProbeDone
    }
}

impl<'de> de::Deserializer<'de> for &mut FieldProbe {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        self.fields = Some(fields);
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

impl<'de> Deserialize<'de> for CallArgs {
    /// `CallArgs` is produced by the worker's binder directly; deserializing it from data takes
    /// `{"args": [...], "kwargs": {...}}`.
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Map::deserialize(d)?;
        let args = match v.remove("args") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(de::Error::custom("`args` must be a list")),
        };
        let kwargs = match v.remove("kwargs") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(de::Error::custom("`kwargs` must be an object")),
        };
        Ok(CallArgs { args, kwargs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Get {
        ticket_id: i64,
        #[serde(default)]
        fresh: bool,
    }

    fn kw(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn tuple_from_positional() {
        let (a, b): (i64, i64) = bind(&[json!(2), json!(3)], &Map::new()).unwrap();
        assert_eq!((a, b), (2, 3));
    }

    #[test]
    fn tuple_refuses_kwargs() {
        let err = bind::<(i64,)>(&[], &kw(json!({"x": 1}))).unwrap_err();
        assert_eq!(err.exc_type, "TypeError");
        assert!(err.message().contains("positional arguments only"));
    }

    #[test]
    fn struct_from_positional_keywords_and_both() {
        assert_eq!(
            bind::<Get>(&[json!(7)], &Map::new()).unwrap(),
            Get {
                ticket_id: 7,
                fresh: false
            }
        );
        assert_eq!(
            bind::<Get>(&[], &kw(json!({"ticket_id": 8, "fresh": true}))).unwrap(),
            Get {
                ticket_id: 8,
                fresh: true
            }
        );
        assert_eq!(
            bind::<Get>(&[json!(9)], &kw(json!({"fresh": true}))).unwrap(),
            Get {
                ticket_id: 9,
                fresh: true
            }
        );
    }

    #[test]
    fn python_like_errors() {
        let dup = bind::<Get>(&[json!(9)], &kw(json!({"ticket_id": 1}))).unwrap_err();
        assert!(dup
            .message()
            .contains("multiple values for argument 'ticket_id'"));
        let many = bind::<Get>(&[json!(1), json!(true), json!(3)], &kw(json!({"x": 1})));
        assert!(many.unwrap_err().message().contains("takes 2 positional"));
        let wrong = bind::<(i64, i64)>(&[json!("a"), json!(1)], &Map::new()).unwrap_err();
        assert_eq!(wrong.exc_type, "TypeError");
        assert!(wrong.message().starts_with("bad task arguments"));
    }

    #[test]
    fn no_parameters() {
        let () = bind::<()>(&[], &Map::new()).unwrap();
        assert!(bind::<()>(&[json!(1)], &Map::new()).is_err());
    }

    #[test]
    fn raw_call_args_and_big_ints() {
        let big: Value = serde_json::from_str("1267650600228229401496703205376").unwrap();
        let raw: CallArgs = bind(std::slice::from_ref(&big), &kw(json!({"k": null}))).unwrap();
        assert_eq!(raw.args, vec![big]);
        assert_eq!(raw.kwargs["k"], Value::Null);
    }
}
