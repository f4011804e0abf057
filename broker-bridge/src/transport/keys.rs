//! Redis key names of kombu's Redis transport, and the priority → list mapping.

use serde_json::Value;

use super::options::TransportOptions;

/// kombu's `max_priority`: message priorities are clamped to `0..=9`.
const MAX_PRIORITY: i64 = 9;

/// Key names, with `global_keyprefix` applied verbatim (kombu's `GlobalKeyPrefixMixin`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    sep: String,
    steps: Vec<u8>,
    /// `unacked` hash.
    pub unacked: String,
    /// `unacked_index` sorted set.
    pub unacked_index: String,
    /// `unacked_mutex` lock.
    pub unacked_mutex: String,
    /// celeriac's dead-letter list.
    pub dead_letter: String,
    /// Hash of why each dead-lettered element is there: field = SHA-1 hex of the element.
    pub dead_letter_reasons: String,
}

impl Keys {
    /// Key names for these options.
    pub fn new(o: &TransportOptions) -> Self {
        let p = &o.global_keyprefix;
        Keys {
            prefix: p.clone(),
            sep: o.sep.clone(),
            steps: o.priority_steps.clone(),
            unacked: format!("{p}{}", o.unacked_key),
            unacked_index: format!("{p}{}", o.unacked_index_key),
            unacked_mutex: format!("{p}{}", o.unacked_mutex_key),
            dead_letter: format!("{p}{}", o.dead_letter_key),
            dead_letter_reasons: format!("{p}{}.reasons", o.dead_letter_key),
        }
    }

    /// The `global_keyprefix` (empty when unset).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The priority steps, ascending.
    pub fn steps(&self) -> &[u8] {
        &self.steps
    }

    /// The separator (`\x06\x16`).
    pub fn sep(&self) -> &str {
        &self.sep
    }

    /// The list of `queue` holding messages of priority step `step`: `Q` for step 0,
    /// `Q SEP step` otherwise.
    pub fn queue_list(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            format!("{}{queue}", self.prefix)
        } else {
            format!("{}{queue}{}{step}", self.prefix, self.sep)
        }
    }

    /// The marker of a [`crate::transport::Broker::publish_once`] publication:
    /// `celeriac.published.<marker>`.
    pub fn publish_marker(&self, marker: &str) -> String {
        format!("{}celeriac.published.{marker}", self.prefix)
    }

    /// The list a message of priority `priority` goes to.
    pub fn queue_list_for_priority(&self, queue: &str, priority: u8) -> String {
        self.queue_list(queue, self.step_for(priority))
    }

    /// Every list of `queue`, in step order.
    pub fn queue_lists(&self, queue: &str) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| self.queue_list(queue, *s))
            .collect()
    }

    /// The largest step not above `priority` (kombu's `Channel.priority`).
    pub fn step_for(&self, priority: u8) -> u8 {
        self.steps
            .iter()
            .copied()
            .filter(|s| *s <= priority)
            .max()
            .unwrap_or(0)
    }

    /// `_kombu.binding.<exchange>`: the binding table read by producers.
    pub fn binding(&self, exchange: &str) -> String {
        format!("{}_kombu.binding.{exchange}", self.prefix)
    }

    /// `_kombu.binding_permanent.<exchange>` (kombu 5.7): keeps kombu's binding sweep away.
    pub fn binding_permanent(&self, exchange: &str) -> String {
        format!("{}_kombu.binding_permanent.{exchange}", self.prefix)
    }

    /// A binding member: `routing_key SEP pattern SEP queue`.
    pub fn binding_member(&self, routing_key: &str, pattern: &str, queue: &str) -> String {
        format!("{routing_key}{sep}{pattern}{sep}{queue}", sep = self.sep)
    }
}

/// A message's priority as kombu computes it from `properties.priority`: Python's `int()` of
/// the value, clamped to `0..=9`; missing or unreadable → 0.
pub fn message_priority(priority: Option<&Value>) -> u8 {
    let n: Option<i64> = match priority {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc().clamp(-1.0, 10.0) as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Bool(b)) => Some(i64::from(*b)),
        _ => None,
    };
    n.unwrap_or(0).clamp(0, MAX_PRIORITY) as u8
}

/// [`message_priority`] of a `properties.priority` that is an integer from 0 to 255.
pub fn small_int_priority(priority: u8) -> u8 {
    priority.min(MAX_PRIORITY as u8)
}

/// The priority of an envelope given as a JSON value.
pub fn envelope_priority(envelope: &Value) -> u8 {
    message_priority(envelope.get("properties").and_then(|p| p.get("priority")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_int_priority_as_message_priority() {
        for p in 0..=u8::MAX {
            assert_eq!(small_int_priority(p), message_priority(Some(&json!(p))));
        }
    }

    #[test]
    fn lists_and_steps() {
        let k = Keys::new(&TransportOptions::default());
        assert_eq!(k.queue_list("celery", 0), "celery");
        assert_eq!(k.queue_list_for_priority("celery", 2), "celery");
        assert_eq!(k.queue_list_for_priority("celery", 5), "celery\x06\x163");
        assert_eq!(k.queue_list_for_priority("celery", 8), "celery\x06\x166");
        assert_eq!(k.queue_list_for_priority("celery", 9), "celery\x06\x169");
        assert_eq!(k.queue_lists("q").len(), 4);
        assert_eq!(
            k.binding_member("q", "", "q"),
            "q\x06\x16\x06\x16q".to_string()
        );
    }

    #[test]
    fn prefix_applies_to_every_key() {
        let k = Keys::new(&TransportOptions {
            global_keyprefix: "app:".into(),
            ..Default::default()
        });
        assert_eq!(k.queue_list("celery", 3), "app:celery\x06\x163");
        assert_eq!(k.binding("celery"), "app:_kombu.binding.celery");
        assert_eq!(k.unacked, "app:unacked");
        assert_eq!(k.unacked_index, "app:unacked_index");
        assert_eq!(k.dead_letter_reasons, "app:celeriac.dead_letter.reasons");
    }

    #[test]
    fn priority_like_python_int() {
        assert_eq!(message_priority(None), 0);
        assert_eq!(message_priority(Some(&json!(null))), 0);
        assert_eq!(message_priority(Some(&json!(4))), 4);
        assert_eq!(message_priority(Some(&json!(12))), 9);
        assert_eq!(message_priority(Some(&json!(-3))), 0);
        assert_eq!(message_priority(Some(&json!(5.9))), 5);
        assert_eq!(message_priority(Some(&json!(" 7 "))), 7);
        assert_eq!(message_priority(Some(&json!("7.5"))), 0);
        assert_eq!(message_priority(Some(&json!(true))), 1);
        assert_eq!(
            message_priority(Some(
                &serde_json::from_str("100000000000000000000000").unwrap()
            )),
            9
        );
    }
}
