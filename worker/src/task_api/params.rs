//! Binding a call to a task's named parameters exactly as CPython binds a call to a `def`.
//!
//! [`#[celeriac_worker::task]`](macro@crate::task) describes an `async fn`'s parameters as
//! [`Params`]; [`Params::bind`] places the call's positional and keyword arguments into them
//! (positional, keyword or both, defaults, `*args`, `**kwargs`, keyword-only parameters) and
//! fails with the `TypeError` CPython raises for the same call, word for word.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{PyException, TaskError};
use super::handler::TaskFuture;

/// What kind of parameter, in Python's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Takes a positional or a keyword argument (`def f(a)`).
    PositionalOrKeyword,
    /// Takes a keyword argument only (after `*args` or `*` in Python).
    KeywordOnly,
    /// Takes the extra positional arguments as a list (`*args`).
    VarArgs,
    /// Takes the extra keyword arguments as an object (`**kwargs`).
    VarKwargs,
}

/// One parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name (the keyword a caller uses).
    pub name: &'static str,
    /// Its kind.
    pub kind: ParamKind,
    /// Whether it has a default value (then a call may leave it out).
    pub has_default: bool,
}

/// A function's parameters in declaration order, as Python would have them: positional-or-keyword
/// ones first, then at most one `*args`, keyword-only ones, at most one `**kwargs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The function's name, the first word of every error message (`add() missing ...`).
    pub function: &'static str,
    /// The parameters.
    pub params: &'static [Param],
}

impl Params {
    /// Places `args` and `kwargs` into the parameters: one entry per parameter, `None` when the
    /// call left out a parameter that has a default; `*args` gets a list and `**kwargs` an object
    /// (empty when nothing extra was given).
    pub fn bind(
        &self,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Result<Vec<Option<Value>>, PyException> {
        let f = self.function;
        let params = self.params;
        let mut slots: Vec<Option<Value>> = vec![None; params.len()];
        let positional: Vec<usize> = self.indices(ParamKind::PositionalOrKeyword);
        let var_args = self.indices(ParamKind::VarArgs).first().copied();
        let var_kwargs = self.indices(ParamKind::VarKwargs).first().copied();

        for (slot, value) in positional.iter().zip(args) {
            slots[*slot] = Some(value.clone());
        }
        let extra = args.get(positional.len()..).unwrap_or_default();
        if let Some(i) = var_args {
            slots[i] = Some(Value::Array(extra.to_vec()));
        }

        let mut extra_kwargs = Map::new();
        for (name, value) in kwargs {
            let named = params.iter().position(|p| {
                p.name == name
                    && matches!(
                        p.kind,
                        ParamKind::PositionalOrKeyword | ParamKind::KeywordOnly
                    )
            });
            match named {
                Some(i) if slots[i].is_some() => {
                    return Err(type_error(format!(
                        "{f}() got multiple values for argument '{name}'"
                    )));
                }
                Some(i) => slots[i] = Some(value.clone()),
                None if var_kwargs.is_some() => {
                    extra_kwargs.insert(name.clone(), value.clone());
                }
                None => {
                    return Err(type_error(format!(
                        "{f}() got an unexpected keyword argument '{name}'"
                    )));
                }
            }
        }
        if let Some(i) = var_kwargs {
            slots[i] = Some(Value::Object(extra_kwargs));
        }

        if !extra.is_empty() && var_args.is_none() {
            return Err(self.too_many_positional(args.len(), &slots));
        }
        let missing = |kind: ParamKind| -> Vec<&'static str> {
            params
                .iter()
                .zip(&slots)
                .filter(|(p, v)| p.kind == kind && !p.has_default && v.is_none())
                .map(|(p, _)| p.name)
                .collect()
        };
        for (kind, word) in [
            (ParamKind::PositionalOrKeyword, "positional"),
            (ParamKind::KeywordOnly, "keyword-only"),
        ] {
            let names = missing(kind);
            if !names.is_empty() {
                return Err(type_error(format!(
                    "{f}() missing {} required {word} argument{}: {}",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    name_list(&names)
                )));
            }
        }
        Ok(slots)
    }

    fn indices(&self, kind: ParamKind) -> Vec<usize> {
        (0..self.params.len())
            .filter(|i| self.params[*i].kind == kind)
            .collect()
    }

    /// CPython's `too_many_positional` message.
    fn too_many_positional(&self, given: usize, slots: &[Option<Value>]) -> PyException {
        let positional: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| p.kind == ParamKind::PositionalOrKeyword)
            .collect();
        let count = positional.len();
        let with_default = positional.iter().filter(|p| p.has_default).count();
        let (takes, plural) = if with_default > 0 {
            (format!("from {} to {count}", count - with_default), true)
        } else {
            (count.to_string(), count != 1)
        };
        let kwonly_given = self
            .params
            .iter()
            .zip(slots)
            .filter(|(p, v)| p.kind == ParamKind::KeywordOnly && v.is_some())
            .count();
        let kwonly = if kwonly_given > 0 {
            format!(
                " positional argument{} (and {kwonly_given} keyword-only argument{})",
                if given != 1 { "s" } else { "" },
                if kwonly_given != 1 { "s" } else { "" },
            )
        } else {
            String::new()
        };
        type_error(format!(
            "{}() takes {takes} positional argument{} but {given}{kwonly} {} given",
            self.function,
            if plural { "s" } else { "" },
            if given == 1 && kwonly_given == 0 {
                "was"
            } else {
                "were"
            },
        ))
    }
}

/// `'a'`, `'a' and 'b'`, `'a', 'b', and 'c'`, as CPython lists missing arguments.
fn name_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., second_last, last] => {
            format!("{}, {second_last}, and {last}", init.join(", "))
        }
        [] => String::new(),
    }
}

fn type_error(message: String) -> PyException {
    PyException::new("TypeError", message)
}

/// Converts a bound argument to the parameter's Rust type; a value of the wrong kind fails with
/// `TypeError: f() argument 'a': <what was wrong>`.
pub fn convert<T: DeserializeOwned>(
    function: &str,
    name: &str,
    value: Value,
) -> Result<T, PyException> {
    serde_json::from_value(value)
        .map_err(|e| type_error(format!("{function}() argument '{name}': {e}")))
}

/// The error of a parameter left unbound (cannot happen after [`Params::bind`] succeeded).
pub fn unbound(function: &str, name: &str) -> PyException {
    type_error(format!("{function}() argument '{name}' was not bound"))
}

/// The future of a call that failed to bind.
pub fn failed(e: PyException) -> TaskFuture {
    Box::pin(std::future::ready(Err(TaskError::Fail(e))))
}

/// A task function's return value as the runtime takes it: `R` as JSON, `E` as a [`TaskError`].
pub fn into_result<R: Serialize, E: Into<TaskError>>(r: Result<R, E>) -> Result<Value, TaskError> {
    let value = r.map_err(Into::into)?;
    serde_json::to_value(value).map_err(|e| {
        TaskError::Fail(PyException::new(
            "TypeError",
            format!("task result is not JSON serializable: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const fn p(name: &'static str, kind: ParamKind, has_default: bool) -> Param {
        Param {
            name,
            kind,
            has_default,
        }
    }
    use ParamKind::*;

    const ADD: Params = Params {
        function: "add",
        params: &[
            p("a", PositionalOrKeyword, false),
            p("b", PositionalOrKeyword, false),
        ],
    };

    fn kw(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn err(params: &Params, args: &[Value], kwargs: Value) -> String {
        let e = params.bind(args, &kw(kwargs)).unwrap_err();
        assert_eq!(
            (e.exc_type.as_str(), e.exc_module.as_str()),
            ("TypeError", "builtins")
        );
        e.message()
    }

    #[test]
    fn positional_keyword_and_mixed() {
        let all = [
            ADD.bind(&[json!(2), json!(40)], &Map::new()).unwrap(),
            ADD.bind(&[], &kw(json!({"b": 40, "a": 2}))).unwrap(),
            ADD.bind(&[json!(2)], &kw(json!({"b": 40}))).unwrap(),
        ];
        for slots in all {
            assert_eq!(slots, vec![Some(json!(2)), Some(json!(40))]);
        }
    }

    #[test]
    fn cpython_messages() {
        assert_eq!(
            err(&ADD, &[json!(1)], json!({})),
            "add() missing 1 required positional argument: 'b'"
        );
        assert_eq!(
            err(&ADD, &[], json!({})),
            "add() missing 2 required positional arguments: 'a' and 'b'"
        );
        assert_eq!(
            err(&ADD, &[json!(1)], json!({"a": 2})),
            "add() got multiple values for argument 'a'"
        );
        assert_eq!(
            err(&ADD, &[json!(1), json!(2), json!(3)], json!({})),
            "add() takes 2 positional arguments but 3 were given"
        );
        assert_eq!(
            err(&ADD, &[json!(1), json!(2)], json!({"c": 3})),
            "add() got an unexpected keyword argument 'c'"
        );
        const THREE_: Params = Params {
            function: "f",
            params: &[
                p("x", PositionalOrKeyword, false),
                p("y", PositionalOrKeyword, false),
                p("z", PositionalOrKeyword, false),
                p("w", PositionalOrKeyword, true),
            ],
        };
        assert_eq!(
            err(&THREE_, &[], json!({})),
            "f() missing 3 required positional arguments: 'x', 'y', and 'z'"
        );
        assert_eq!(
            err(&THREE_, &vec![json!(1); 5], json!({})),
            "f() takes from 3 to 4 positional arguments but 5 were given"
        );
        const ONE_: Params = Params {
            function: "g",
            params: &[p("x", PositionalOrKeyword, false)],
        };
        assert_eq!(
            err(&ONE_, &vec![json!(1); 2], json!({})),
            "g() takes 1 positional argument but 2 were given"
        );
        const NONE_: Params = Params {
            function: "h",
            params: &[],
        };
        assert_eq!(
            err(&NONE_, &[json!(1)], json!({})),
            "h() takes 0 positional arguments but 1 was given"
        );
    }

    #[test]
    fn keyword_only_defaults_and_variadics() {
        // def f(a, b=2, *rest, c, d=4, **extra)
        const F_: Params = Params {
            function: "f",
            params: &[
                p("a", PositionalOrKeyword, false),
                p("b", PositionalOrKeyword, true),
                p("rest", VarArgs, false),
                p("c", KeywordOnly, false),
                p("d", KeywordOnly, true),
                p("extra", VarKwargs, false),
            ],
        };
        let slots = F_
            .bind(
                &[json!(1), json!(2), json!(3)],
                &kw(json!({"c": 5, "z": 9})),
            )
            .unwrap();
        assert_eq!(
            slots,
            vec![
                Some(json!(1)),
                Some(json!(2)),
                Some(json!([3])),
                Some(json!(5)),
                None,
                Some(json!({"z": 9})),
            ]
        );
        let slots = F_.bind(&[json!(1)], &kw(json!({"c": 5}))).unwrap();
        assert_eq!(slots[1], None);
        assert_eq!(slots[2], Some(json!([])));
        assert_eq!(slots[5], Some(json!({})));
        assert_eq!(
            err(&F_, &[json!(1)], json!({})),
            "f() missing 1 required keyword-only argument: 'c'"
        );
        assert_eq!(
            err(&F_, &[], json!({})),
            "f() missing 1 required positional argument: 'a'",
            "positional first, as CPython"
        );
        // def k(a, *, c): too many positional with a keyword-only argument given.
        const K_: Params = Params {
            function: "k",
            params: &[
                p("a", PositionalOrKeyword, false),
                p("c", KeywordOnly, false),
            ],
        };
        assert_eq!(
            err(&K_, &[json!(1), json!(2)], json!({"c": 3})),
            "k() takes 1 positional argument but 2 positional arguments (and 1 keyword-only argument) were given"
        );
        assert_eq!(
            err(&K_, &[json!(1), json!(2)], json!({})),
            "k() takes 1 positional argument but 2 were given"
        );
        // `*args` and `**kwargs` are not keywords themselves.
        const V_: Params = Params {
            function: "v",
            params: &[p("args", VarArgs, false)],
        };
        assert_eq!(
            err(&V_, &[], json!({"args": 1})),
            "v() got an unexpected keyword argument 'args'"
        );
    }

    #[test]
    fn conversion_names_the_parameter() {
        let e = convert::<i64>("add", "b", json!("x")).unwrap_err();
        assert_eq!(e.exc_type, "TypeError");
        assert!(e.message().starts_with("add() argument 'b': "), "{e}");
        assert_eq!(
            convert::<Vec<i64>>("f", "rest", json!([1, 2])).unwrap(),
            [1, 2]
        );
    }
}
