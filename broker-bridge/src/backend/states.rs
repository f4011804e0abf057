//! Celery task states, as the strings stored in the `status` field of a task meta.

use std::fmt;
use std::str::FromStr;

/// A task state. The wire form is Celery's upper-case string (`celery/states.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Unknown or not yet run: what a reader gets when no meta is stored (never written).
    Pending,
    /// Received by a worker (only an event in Celery; never written by its Redis backend).
    Received,
    /// Running (written only when the task tracks "started").
    Started,
    /// Finished and returned a value.
    Success,
    /// Raised an exception.
    Failure,
    /// Raised `Retry`: will run again.
    Retry,
    /// Revoked, expired or terminated.
    Revoked,
}

impl TaskState {
    /// Celery's string for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
        }
    }

    /// Ready states (what `AsyncResult.get()` waits for): SUCCESS, FAILURE, REVOKED.
    /// Only these get a `date_done`.
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// States whose `result` is an exception: FAILURE, RETRY, REVOKED.
    pub fn is_exception(self) -> bool {
        matches!(
            self,
            TaskState::Failure | TaskState::Retry | TaskState::Revoked
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state string that is not one of the states this crate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in [
            TaskState::Pending,
            TaskState::Received,
            TaskState::Started,
            TaskState::Success,
            TaskState::Failure,
            TaskState::Retry,
            TaskState::Revoked,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
        assert_eq!(
            "success".parse::<TaskState>(),
            Err(UnknownState("success".into()))
        );
    }

    #[test]
    fn ready_and_exception_sets_match_celery() {
        assert!(TaskState::Success.is_ready() && !TaskState::Success.is_exception());
        assert!(TaskState::Failure.is_ready() && TaskState::Failure.is_exception());
        assert!(TaskState::Revoked.is_ready() && TaskState::Revoked.is_exception());
        assert!(!TaskState::Retry.is_ready() && TaskState::Retry.is_exception());
        assert!(!TaskState::Started.is_ready() && !TaskState::Pending.is_ready());
    }
}
