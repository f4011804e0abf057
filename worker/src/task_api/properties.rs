//! A message's transport properties (Celery's `request.properties`), read from the message only
//! when a task looks at them: most never do, and reading them is a JSON parse per message.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

/// The transport properties of the message a task runs for, exactly as kombu stores them on
/// Redis. Dereferences to the JSON object (`ctx.properties["app_id"]`,
/// `ctx.properties.get("priority")`), parsed the first time it is read.
#[derive(Clone, Default)]
pub struct Properties {
    /// The envelope to read them from (`None`: built from a map).
    envelope: Option<Arc<[u8]>>,
    map: OnceLock<Map<String, Value>>,
}

impl Properties {
    /// The properties of a kombu envelope as stored (empty when it has none).
    pub(crate) fn of_envelope(raw: &[u8]) -> Self {
        Properties {
            envelope: Some(Arc::from(raw)),
            map: OnceLock::new(),
        }
    }

    /// The JSON object, owned.
    pub fn into_map(self) -> Map<String, Value> {
        let Properties { envelope, map } = self;
        map.into_inner()
            .unwrap_or_else(|| parse(envelope.as_deref()))
    }
}

impl From<Map<String, Value>> for Properties {
    fn from(map: Map<String, Value>) -> Self {
        Properties {
            envelope: None,
            map: OnceLock::from(map),
        }
    }
}

impl Deref for Properties {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.map.get_or_init(|| parse(self.envelope.as_deref()))
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Read from the trailing `properties` text alone when it parses (kombu writes it last), else
/// from the whole envelope; empty when it has none.
fn parse(envelope: Option<&[u8]>) -> Map<String, Value> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        properties: Map<String, Value>,
    }
    let Some(raw) = envelope else {
        return Map::new();
    };
    if let Some(Ok(map)) =
        celeriac_broker_bridge::envelope::trailing_properties(raw).map(serde_json::from_slice)
    {
        return map;
    }
    serde_json::from_slice::<Envelope>(raw)
        .map(|e| e.properties)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_the_envelopes_as_stored() {
        let raw = br#"{"body": "W10=", "content-type": "application/json", "headers": {},
            "properties": {"correlation_id": "c1", "app_id": "1234", "priority": 7,
            "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": true}}}"#;
        let props = Properties::of_envelope(raw);
        assert_eq!(props["app_id"], "1234");
        assert_eq!(props["priority"], 7);
        assert_eq!(props["delivery_info"]["redelivered"], true);
        assert_eq!(props.len(), 4);
        assert_eq!(props.clone().into_map().len(), 4);
        assert!(Properties::of_envelope(b"not json").is_empty());
        let later = br#"{"properties": {"priority": 7}, "headers": {"properties": {"a": 1}}}"#;
        assert_eq!(Properties::of_envelope(later)["priority"], 7);
        let first = br#"{"properties": {"priority": 3}, "body": "W10="}"#;
        assert_eq!(Properties::of_envelope(first)["priority"], 3);
        let map: Map<String, Value> = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(Properties::from(map.clone()).into_map(), map);
        assert_eq!(
            format!("{:?}", Properties::from(map)),
            r#"{"a": Number(1)}"#
        );
    }
}
