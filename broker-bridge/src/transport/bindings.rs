//! Binding tables (`_kombu.binding.<exchange>`) and the exchange → queues lookup.

use redis::AsyncCommands;

use super::error::Result;
use super::topic::topic_matches;
use super::Broker;

/// One binding of a queue to a direct exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The exchange name (Celery's default for queue `Q` is `Q`).
    pub exchange: String,
    /// The routing key (Celery's default is the queue name).
    pub routing_key: String,
    /// The queue.
    pub queue: String,
}

impl Binding {
    /// Celery's default for a queue: exchange and routing key both named after it.
    pub fn default_for(queue: &str) -> Self {
        Binding {
            exchange: queue.into(),
            routing_key: queue.into(),
            queue: queue.into(),
        }
    }
}

impl Broker {
    /// Declare the queues as a Python worker does at startup: for each queue `Q`,
    /// `SADD _kombu.binding.Q "Q SEP SEP Q"` and the same member in kombu 5.7's
    /// `_kombu.binding_permanent.Q` (so kombu's binding sweep never deletes the table).
    pub async fn declare_queues(&self, queues: &[String]) -> Result<()> {
        let bindings: Vec<Binding> = queues.iter().map(|q| Binding::default_for(q)).collect();
        self.declare_bindings(&bindings).await
    }

    /// Write direct-exchange bindings (one `MULTI`), as kombu's `queue_bind` does for queues
    /// without `x-expires`.
    pub async fn declare_bindings(&self, bindings: &[Binding]) -> Result<()> {
        if bindings.is_empty() {
            return Ok(());
        }
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for b in bindings {
            let member = keys.binding_member(&b.routing_key, "", &b.queue);
            pipe.sadd(keys.binding(&b.exchange), &member).ignore();
            pipe.sadd(keys.binding_permanent(&b.exchange), &member)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// Bind a short-lived queue (a control reply queue): only `_kombu.binding.<exchange>`, not
    /// the permanent table. Remove it with [`Broker::unbind_temporary`].
    pub async fn bind_temporary(&self, b: &Binding) -> Result<()> {
        let keys = &self.inner.keys;
        let member = keys.binding_member(&b.routing_key, "", &b.queue);
        self.conn()
            .sadd::<_, _, ()>(keys.binding(&b.exchange), member)
            .await?;
        Ok(())
    }

    /// Remove a binding made by [`Broker::bind_temporary`] and delete its queue's lists.
    pub async fn unbind_temporary(&self, b: &Binding) -> Result<()> {
        let keys = &self.inner.keys;
        let member = keys.binding_member(&b.routing_key, "", &b.queue);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.srem(keys.binding(&b.exchange), member).ignore();
        pipe.del(keys.queue_lists(&b.queue)).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// A connection of its own for waiting on plain lists (remote-control replies), so the
    /// wait holds up nothing on the shared connection.
    pub async fn list_waiter(&self) -> Result<ListWaiter> {
        let reply_timeout = super::response_timeout(self.inner.opts.visibility_timeout);
        let conn = super::conn::dedicated(&self.inner.url, reply_timeout).await?;
        Ok(ListWaiter {
            broker: self.clone(),
            conn,
            cap: reply_timeout / 2,
        })
    }

    /// The queues a message published to `exchange` with `routing_key` goes to, as kombu's
    /// `_lookup`: the anonymous exchange `""` → the routing key itself; a named exchange → the
    /// bound queues whose routing key equals it (or, for topic bindings, matches it); no match →
    /// `deadletter_queue` when that option is set, else none.
    pub async fn lookup(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>> {
        let fallback = || self.inner.opts.deadletter_queue.iter().cloned().collect();
        if exchange.is_empty() {
            return Ok(if routing_key.is_empty() {
                fallback()
            } else {
                vec![routing_key.to_string()]
            });
        }
        let keys = &self.inner.keys;
        let members: Vec<Vec<u8>> = self.conn().smembers(keys.binding(exchange)).await?;
        let mut queues: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let m = String::from_utf8_lossy(m);
                let mut parts = m.splitn(3, keys.sep());
                let (rk, pattern, queue) = (parts.next()?, parts.next()?, parts.next()?);
                let hit = if pattern.is_empty() {
                    rk == routing_key
                } else {
                    topic_matches(rk, routing_key)
                };
                (hit && !queue.is_empty()).then(|| queue.to_string())
            })
            .collect();
        queues.sort();
        queues.dedup();
        if queues.is_empty() {
            return Ok(fallback());
        }
        Ok(queues)
    }
}

/// Blocking pops on a connection of its own (see [`Broker::list_waiter`]).
pub struct ListWaiter {
    broker: Broker,
    conn: redis::aio::MultiplexedConnection,
    /// The longest single `BRPOP`: half the connection's reply timeout.
    cap: std::time::Duration,
}

impl ListWaiter {
    /// Wait up to `timeout` for an element of `queue` (its priority-0 list; replies and other
    /// plain lists), `BRPOP` as kombu's consumer does. One call blocks at most half the
    /// connection's reply timeout (a longer wait would count as a dead connection): callers that
    /// wait longer call again until their deadline.
    pub async fn pop(
        &mut self,
        queue: &str,
        timeout: std::time::Duration,
    ) -> Result<Option<Vec<u8>>> {
        let key = self.broker.inner.keys.queue_list(queue, 0);
        let secs = timeout.min(self.cap).as_secs_f64().max(0.01);
        let got: Option<(String, Vec<u8>)> = self.conn.brpop(key, secs).await?;
        Ok(got.map(|(_, v)| v))
    }
}
