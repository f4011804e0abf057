//! A task message's `headers` object, split as decoding reads it: each header Celery defines in
//! its own slot, every other header kept in order for [`TaskMessage::extra_headers`].
//!
//! Reading the headers straight into this shape, in the same pass as the envelope (instead of
//! into a JSON map that is then looked up and filtered), spares a string and a hash-map entry for
//! each of the ~20 headers Celery writes on every message. The result is the same as the map's: a repeated header keeps its last value,
//! and the other headers keep the position where they first appeared.
//!
//! [`TaskMessage::extra_headers`]: super::message::TaskMessage::extra_headers

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::envelope::HeadersObject;

/// A header that [`super::TaskMessage`] interprets or that belongs to the transport; every other
/// header is an extra one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Lang,
    Task,
    Id,
    Shadow,
    Eta,
    Expires,
    Group,
    GroupIndex,
    Retries,
    Timelimit,
    RootId,
    ParentId,
    Argsrepr,
    Kwargsrepr,
    Origin,
    IgnoreResult,
    ReplacedTaskNesting,
    StampedHeaders,
    Stamps,
    Compression,
    Redelivered,
    Taskset,
    Utc,
    Chord,
}

impl Known {
    /// Every known header, in slot order.
    #[cfg(test)]
    const ALL: [Known; 24] = [
        Known::Lang,
        Known::Task,
        Known::Id,
        Known::Shadow,
        Known::Eta,
        Known::Expires,
        Known::Group,
        Known::GroupIndex,
        Known::Retries,
        Known::Timelimit,
        Known::RootId,
        Known::ParentId,
        Known::Argsrepr,
        Known::Kwargsrepr,
        Known::Origin,
        Known::IgnoreResult,
        Known::ReplacedTaskNesting,
        Known::StampedHeaders,
        Known::Stamps,
        Known::Compression,
        Known::Redelivered,
        Known::Taskset,
        Known::Utc,
        Known::Chord,
    ];

    /// The header's name on the wire.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Known::Lang => "lang",
            Known::Task => "task",
            Known::Id => "id",
            Known::Shadow => "shadow",
            Known::Eta => "eta",
            Known::Expires => "expires",
            Known::Group => "group",
            Known::GroupIndex => "group_index",
            Known::Retries => "retries",
            Known::Timelimit => "timelimit",
            Known::RootId => "root_id",
            Known::ParentId => "parent_id",
            Known::Argsrepr => "argsrepr",
            Known::Kwargsrepr => "kwargsrepr",
            Known::Origin => "origin",
            Known::IgnoreResult => "ignore_result",
            Known::ReplacedTaskNesting => "replaced_task_nesting",
            Known::StampedHeaders => "stamped_headers",
            Known::Stamps => "stamps",
            Known::Compression => "compression",
            Known::Redelivered => "redelivered",
            Known::Taskset => "taskset",
            Known::Utc => "utc",
            Known::Chord => "chord",
        }
    }

    /// The known header of that name, if it is one.
    pub(crate) fn from_name(name: &str) -> Option<Known> {
        Some(match name {
            "lang" => Known::Lang,
            "task" => Known::Task,
            "id" => Known::Id,
            "shadow" => Known::Shadow,
            "eta" => Known::Eta,
            "expires" => Known::Expires,
            "group" => Known::Group,
            "group_index" => Known::GroupIndex,
            "retries" => Known::Retries,
            "timelimit" => Known::Timelimit,
            "root_id" => Known::RootId,
            "parent_id" => Known::ParentId,
            "argsrepr" => Known::Argsrepr,
            "kwargsrepr" => Known::Kwargsrepr,
            "origin" => Known::Origin,
            "ignore_result" => Known::IgnoreResult,
            "replaced_task_nesting" => Known::ReplacedTaskNesting,
            "stamped_headers" => Known::StampedHeaders,
            "stamps" => Known::Stamps,
            "compression" => Known::Compression,
            "redelivered" => Known::Redelivered,
            "taskset" => Known::Taskset,
            "utc" => Known::Utc,
            "chord" => Known::Chord,
            _ => return None,
        })
    }
}

/// The headers object, split: the known headers by slot, the others in order.
#[derive(Debug, Default)]
pub(crate) struct SplitHeaders {
    known: [Option<Value>; 24],
    /// Every header that is not [`Known`], in the producer's order.
    pub(crate) extra: Map<String, Value>,
}

impl SplitHeaders {
    /// The value of a known header (`Some(Null)` when it is there as `null`).
    pub(crate) fn get(&self, header: Known) -> Option<&Value> {
        self.known[header as usize].as_ref()
    }

    /// Take the value of a known header out (`Some(Null)` when it is there as `null`).
    pub(crate) fn take(&mut self, header: Known) -> Option<Value> {
        self.known[header as usize].take()
    }

    /// Split an already parsed headers map.
    pub(crate) fn from_map(map: &Map<String, Value>) -> Self {
        let mut split = SplitHeaders::default();
        for (name, value) in map {
            split.put(HeaderName::of(name), value.clone());
        }
        split
    }

    fn put(&mut self, name: HeaderName, value: Value) {
        match name {
            HeaderName::Known(header) => self.known[header as usize] = Some(value),
            HeaderName::Other(name) => {
                self.extra.insert(name, value);
            }
        }
    }
}

impl HeadersObject<'_> for SplitHeaders {
    fn redelivered(&self) -> Option<bool> {
        self.get(Known::Redelivered).and_then(Value::as_bool)
    }
}

/// A header's name as read: a known one needs no string of its own.
enum HeaderName {
    Known(Known),
    Other(String),
}

impl HeaderName {
    fn of(name: &str) -> Self {
        Known::from_name(name).map_or_else(|| HeaderName::Other(name.to_string()), Self::Known)
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = HeaderName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header name")
            }
            fn visit_str<E>(self, name: &str) -> Result<HeaderName, E> {
                Ok(HeaderName::of(name))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for SplitHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SplitVisitor;
        impl<'de> Visitor<'de> for SplitVisitor {
            type Value = SplitHeaders;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a headers object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SplitHeaders, A::Error> {
                let mut split = SplitHeaders::default();
                while let Some(name) = map.next_key::<HeaderName>()? {
                    let value = map.next_value()?;
                    split.put(name, value);
                }
                Ok(split)
            }
        }
        deserializer.deserialize_map(SplitVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> serde_json::Result<SplitHeaders> {
        serde_json::from_str(text)
    }

    #[test]
    fn every_known_header_has_its_own_slot_and_name() {
        for (slot, header) in Known::ALL.into_iter().enumerate() {
            assert_eq!(header as usize, slot);
            assert_eq!(Known::from_name(header.name()), Some(header));
        }
        assert_eq!(Known::from_name("traceparent"), None);
    }

    #[test]
    fn read_splits_as_the_map_does() {
        let texts = [
            r#"{"task": "t", "x": 1, "id": "a", "y": {"z": [1]}, "x": 2, "id": "b", "retries": null}"#,
            r#"{"ta\"sk": 1, "t\u0061sk": "escaped", "lang": "py", "n": 12345678901234567890123}"#,
            r#"{}"#,
        ];
        for text in texts {
            let map: Map<String, Value> = serde_json::from_str(text).unwrap();
            let read = read(text).unwrap();
            let split = SplitHeaders::from_map(&map);
            assert_eq!(read.known, split.known, "{text}");
            assert_eq!(read.extra, split.extra, "{text}");
            for (name, value) in &map {
                let got = Known::from_name(name).map_or(read.extra.get(name), |k| read.get(k));
                assert_eq!(got, Some(value), "{name} in {text}");
            }
            let extras: Vec<&String> = map
                .keys()
                .filter(|k| Known::from_name(k).is_none())
                .collect();
            assert_eq!(read.extra.keys().collect::<Vec<_>>(), extras);
        }
        assert_eq!(
            read(r#"{"id": "a", "id": "b"}"#).unwrap().get(Known::Id),
            Some(&Value::from("b"))
        );
        assert!(read("[1]").is_err());
    }
}
