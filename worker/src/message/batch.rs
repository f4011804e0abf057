//! Batching of Redis writes: many tasks finishing at once share one round trip for their acks
//! and one for their results. A caller hands its item over and awaits its own outcome, so the
//! order "result stored, then acked" of late acks is kept; an item alone is flushed at once
//! (no waiting for company), and items arriving during a flush go out together in the next.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Most items written in one round trip.
pub(crate) const MAX_BATCH: usize = 512;

/// A handle to a batching writer of `T` whose per-item outcome is `R`.
pub(crate) struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Spawn the writer: `flush` writes a batch and returns one outcome per item, in order.
    pub(crate) fn spawn<F, Fut>(flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, oneshot::Sender<R>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let (values, replies): (Vec<T>, Vec<_>) = items.into_iter().unzip();
                for (reply, outcome) in replies.into_iter().zip(flush(values).await) {
                    let _ = reply.send(outcome);
                }
            }
        });
        Batcher { tx }
    }

    /// Write `item` with the next batch and wait for its outcome; `None` if the writer is gone.
    pub(crate) async fn submit(&self, item: T) -> Option<R> {
        let (reply, outcome) = oneshot::channel();
        self.tx.send((item, reply)).ok()?;
        outcome.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn items_arriving_together_share_a_flush_and_get_their_own_outcome() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect::<Vec<_>>()
            }
        });
        let mut handles = Vec::new();
        for i in 0..50u32 {
            let b = batcher.clone();
            handles.push(tokio::spawn(async move { b.submit(i).await }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32 * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "some items shared a flush: {sizes:?}");
    }
}
