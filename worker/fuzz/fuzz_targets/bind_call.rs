//! The declarative task argument binder: any key template, SQL text and call arguments →
//! a bound call or a Python-like error; never a panic. A bound call's SQL parameters are the
//! bound values (in placeholder order) and the SQL text is never changed by the arguments.
#![no_main]

use celeriac_cache::{KeyTemplate, NamedSql, Policy, SourceKind};
use celeriac_worker::__private::bind_call;
use celeriac_worker::__private::{QueryTaskConfig, ResultShape};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Input: key template NUL SQL NUL JSON `[args, kwargs]`.
    let mut parts = text.splitn(3, '\0');
    let (Some(key), Some(sql), Some(call)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(template) = KeyTemplate::parse(key) else {
        return;
    };
    let Ok(call) = serde_json::from_str::<Value>(call) else {
        return;
    };
    let (args, kwargs) = match &call {
        Value::Array(items) => (
            items
                .first()
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            items
                .get(1)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => return,
    };
    for kind in [SourceKind::Postgres, SourceKind::MySql, SourceKind::MsSql] {
        let Ok(named) = NamedSql::parse(sql, kind) else {
            continue;
        };
        let config = QueryTaskConfig {
            name: "fuzz.task".into(),
            source: "main".into(),
            sql: sql.into(),
            params: named.names.clone(),
            key: template.clone(),
            policy: Policy::new(Duration::from_secs(60), Duration::from_secs(10)),
            result: ResultShape::One,
        };
        let before = named.sql.clone();
        if let Ok(bound) = bind_call(&config, &named, &args, &kwargs) {
            assert_eq!(bound.params.len(), named.order.len());
            for (name, value) in named.order.iter().zip(&bound.params) {
                assert_eq!(bound.values.get(name), Some(value));
                assert!(!value.is_array() && !value.is_object());
            }
        }
        assert_eq!(named.sql, before);
    }
});
