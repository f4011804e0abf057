//! The chaos run's private PostgreSQL cluster (testkit's [`PostgresServer`]) with a table of
//! items for the declarative query task.

use anyhow::Result;
use celeriac_testkit::PostgresServer;

/// Items in the `items` table (`id` 1..=ITEMS, `name` = `item <id>`).
pub const ITEMS: u32 = 20_000;

/// A running private cluster holding the items; stopped when dropped.
pub struct PrivatePostgres {
    server: PostgresServer,
}

impl PrivatePostgres {
    /// Create and start a cluster and load the items.
    pub fn start() -> Result<PrivatePostgres> {
        let server = PostgresServer::start()?;
        server.psql(&format!(
            "CREATE TABLE items AS SELECT g AS id, 'item ' || g AS name FROM generate_series(1, {ITEMS}) g; \
             ALTER TABLE items ADD PRIMARY KEY (id);"
        ))?;
        Ok(PrivatePostgres { server })
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Restart the server (fast shutdown: open connections are cut, as in a failover).
    pub fn restart(&self) -> Result<()> {
        self.server.restart()
    }
}
