//! What waits in Redis, for metrics and autoscaling: every queue's length (all priority lists),
//! the messages of those queues held unacked by any worker (ETA-held ones apart), and the
//! dead-letter list.

use super::error::Result;
use super::Broker;

/// A snapshot of the work in Redis, read by [`Broker::depths`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depths {
    /// Per queue, in the order asked: messages waiting, summed over all its priority lists.
    pub queues: Vec<(String, u64)>,
    /// Messages of these queues taken by some worker (Python or celeriac) and not acked yet,
    /// except ETA-held ones: running, prefetched, or due. Counted by the routing key kombu
    /// records with each entry of the `unacked` hash (the queue's name for Celery's routes).
    pub unacked: u64,
    /// Messages of these queues held unacked until their `eta`/countdown, which is still in the
    /// future (server clock): reserved, not backlog.
    pub eta_held: u64,
    /// Elements in celeriac's dead-letter list.
    pub dead_letter: u64,
}

impl Depths {
    /// Messages waiting in all the queues of the snapshot together.
    pub fn waiting(&self) -> u64 {
        self.queues.iter().map(|(_, n)| n).sum()
    }
}

impl Broker {
    /// Queue lengths (every priority list of each queue) and the dead-letter list's length in
    /// one pipelined round trip, then the unacked messages of `queues` (one script, a scan of
    /// the `unacked` hash inside Redis).
    pub async fn depths(&self, queues: &[String]) -> Result<Depths> {
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        for q in queues {
            for list in keys.queue_lists(q) {
                pipe.llen(list);
            }
        }
        pipe.llen(&keys.dead_letter);
        let mut lens: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        let dead_letter = lens.pop().unwrap_or(0);
        let mut invocation = self.inner.scripts.unacked_depth.prepare_invoke();
        invocation.key(&keys.unacked);
        for q in queues {
            invocation.arg(q);
        }
        let (unacked, eta_held): (u64, u64) = invocation.invoke_async(&mut self.conn()).await?;
        let per = keys.steps().len().max(1);
        let queues = queues
            .iter()
            .zip(lens.chunks(per))
            .map(|(q, l)| (q.clone(), l.iter().sum()))
            .collect();
        Ok(Depths {
            queues,
            unacked,
            eta_held,
            dead_letter,
        })
    }
}
