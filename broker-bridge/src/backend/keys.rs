//! Result backend key names, with Celery's `global_keyprefix` rule for the backend.

/// Prefix of a task's meta key.
pub const TASK_KEYPREFIX: &str = "celery-task-meta-";
/// Prefix of a group's meta key (and of the chord `.s/.j/.t/.d/.c` keys).
pub const GROUP_KEYPREFIX: &str = "celery-taskset-meta-";

/// The key prefixes of one backend configuration.
///
/// `result_backend_transport_options["global_keyprefix"]` is prepended to every prefix, with an
/// `_` added unless it already ends in one of `:`, `_`, `-`, `.` (unlike the broker's
/// `global_keyprefix`, which kombu uses verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendKeys {
    task: String,
    group: String,
}

impl BackendKeys {
    /// Prefixes for a `global_keyprefix` (empty = none).
    pub fn new(global_keyprefix: &str) -> Self {
        let mut prefix = global_keyprefix.to_owned();
        if let Some(last) = prefix.chars().last() {
            if !matches!(last, ':' | '_' | '-' | '.') {
                prefix.push('_');
            }
        }
        BackendKeys {
            task: format!("{prefix}{TASK_KEYPREFIX}"),
            group: format!("{prefix}{GROUP_KEYPREFIX}"),
        }
    }

    /// `celery-task-meta-<task_id>` (prefixed). Also the pub/sub channel of that task.
    pub fn task(&self, task_id: &str) -> String {
        format!("{}{task_id}", self.task)
    }

    /// `celery-taskset-meta-<group_id>` (prefixed).
    pub fn group(&self, group_id: &str) -> String {
        format!("{}{group_id}", self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_prefix() {
        let k = BackendKeys::new("");
        assert_eq!(k.task("abc"), "celery-task-meta-abc");
        assert_eq!(k.group("g"), "celery-taskset-meta-g");
    }

    #[test]
    fn underscore_added_unless_prefix_ends_in_separator() {
        assert_eq!(
            BackendKeys::new("myapp").task("1"),
            "myapp_celery-task-meta-1"
        );
        for sep in [":", "_", "-", "."] {
            assert_eq!(
                BackendKeys::new(&format!("myapp{sep}")).task("1"),
                format!("myapp{sep}celery-task-meta-1")
            );
        }
        assert_eq!(BackendKeys::new("é").group("g"), "é_celery-taskset-meta-g");
    }
}
