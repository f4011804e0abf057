//! What waits in Redis, for metrics and autoscaling: every queue's length (all priority lists),
//! the messages held unacked by any worker, and the dead-letter list — in one round trip.

use super::error::Result;
use super::Broker;

/// A snapshot of the work in Redis, read by [`Broker::depths`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depths {
    /// Per queue, in the order asked: messages waiting, summed over all its priority lists.
    pub queues: Vec<(String, u64)>,
    /// Messages taken by some worker (any worker, Python or celeriac) and not acked yet: the
    /// length of the `unacked` hash.
    pub unacked: u64,
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
    /// Queue lengths (every priority list of each queue), `HLEN unacked` and the dead-letter
    /// list's length, in one pipelined round trip.
    pub async fn depths(&self, queues: &[String]) -> Result<Depths> {
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        for q in queues {
            for list in keys.queue_lists(q) {
                pipe.llen(list);
            }
        }
        pipe.hlen(&keys.unacked).llen(&keys.dead_letter);
        let mut lens: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        let dead_letter = lens.pop().unwrap_or(0);
        let unacked = lens.pop().unwrap_or(0);
        let per = keys.steps().len().max(1);
        let queues = queues
            .iter()
            .zip(lens.chunks(per))
            .map(|(q, l)| (q.clone(), l.iter().sum()))
            .collect();
        Ok(Depths {
            queues,
            unacked,
            dead_letter,
        })
    }
}
