//! The transport's Lua scripts (in `lua/`), each run atomically by Redis.

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

fn with_common(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// The compiled scripts (their SHA-1 is computed once; `EVALSHA` falls back to `EVAL` after a
/// server restart flushed the script cache).
pub(crate) struct Scripts {
    /// Atomic pop + record in unacked, with dead-lettering of bad elements.
    pub fetch: Script,
    /// Compare-and-settle of one unacked message (ack, requeue, restore, dead-letter, move).
    pub settle: Script,
    /// Refresh delivery times of held messages.
    pub refresh: Script,
    /// Compare-and-delete of the sweep lock.
    pub release_lock: Script,
    /// The server clock.
    pub server_time: Script,
    /// Push unless a marker says it was pushed already.
    pub publish_once: Script,
    /// Dead-letter a message that was never held here (received from SQS).
    pub dead_letter: Script,
    /// Unacked messages of some queues: held, and ETA-held (not yet due).
    pub unacked_depth: Script,
}

impl Scripts {
    /// Load every script.
    pub(crate) fn new() -> Self {
        Scripts {
            fetch: with_common(include_str!("lua/fetch.lua")),
            settle: with_common(include_str!("lua/settle.lua")),
            refresh: with_common(include_str!("lua/refresh.lua")),
            release_lock: Script::new(include_str!("lua/release_lock.lua")),
            server_time: with_common(include_str!("lua/server_time.lua")),
            publish_once: Script::new(include_str!("lua/publish_once.lua")),
            dead_letter: with_common(include_str!("lua/dead_letter.lua")),
            unacked_depth: Script::new(include_str!("lua/unacked_depth.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
