//! The one in-flight table: every message this worker holds, by delivery tag, from the moment
//! it is fetched until it leaves (acked, rejected, dead-lettered or given back). Each entry says
//! where the message is (reserved, ETA-held, running, finishing), whether it is acked, and holds
//! what each reader needs: the keepalive refreshes the unacked ones, a warm shutdown aborts the
//! running ones and gives back the rest (never the finishing ones), remote control lists the
//! requests (`active`, `reserved`, `scheduled`, `query_task`) and terminates runs, the metrics
//! and heartbeats count them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use celeriac_broker_bridge::codec::TaskMessage;
use celeriac_broker_bridge::transport::{small_int_priority, Delivery};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::task::AbortHandle;

/// Where a request is, as remote inspection shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stage {
    /// Waiting for an execution slot.
    Reserved,
    /// Waiting for its ETA.
    Scheduled(DateTime<Utc>),
    /// Running (or recording its outcome) since this unix time.
    Active(f64),
}

/// The priority Celery's consumer gives the timer entry of every ETA task (`call_at(eta, ...,
/// priority=6)`), which `inspect scheduled` reports.
const ETA_TIMER_PRIORITY: u8 = 6;

/// One held request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The task id.
    pub(crate) id: String,
    /// The task name.
    pub(crate) name: String,
    args: Value,
    kwargs: Value,
    delivery_info: HeldDelivery,
    /// Where it is.
    pub(crate) stage: Stage,
    /// Whether the message is acked.
    pub(crate) acknowledged: bool,
    /// Its stamps (Celery's `Request.stamps`: name → value).
    pub(crate) stamps: Map<String, Value>,
}

/// A held request's `delivery_info`, made into JSON only when `inspect` asks.
#[derive(Debug, Clone, Default)]
struct HeldDelivery {
    exchange: String,
    routing_key: String,
    priority: u8,
    redelivered: bool,
}

impl HeldDelivery {
    fn to_json(&self) -> Value {
        serde_json::json!({
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "priority": self.priority,
            "redelivered": self.redelivered,
        })
    }
}

impl Request {
    fn of(delivery: &Delivery, msg: &TaskMessage) -> Self {
        let info = HeldDelivery {
            exchange: delivery.exchange.clone(),
            routing_key: delivery.routing_key.clone(),
            // The decoded priority when it is a small integer (always, from Celery), else the
            // envelope's read as kombu reads it.
            priority: msg
                .priority
                .map_or_else(|| delivery.priority(), small_int_priority),
            redelivered: msg.redelivered,
        };
        Request {
            id: msg.id.clone(),
            name: msg.task.clone(),
            args: Value::Array(msg.args.clone()),
            kwargs: Value::Object(msg.kwargs.clone()),
            delivery_info: info,
            stage: Stage::Reserved,
            acknowledged: false,
            stamps: crate::message::revoked::request_stamps(msg),
        }
    }

    /// Celery's `Request.info()`.
    pub(crate) fn info(&self, hostname: &str) -> Value {
        let time_start = match self.stage {
            Stage::Active(t) => serde_json::Number::from_f64(t).map_or(Value::Null, Value::Number),
            _ => Value::Null,
        };
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "type": self.name,
            "hostname": hostname,
            "time_start": time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": self.delivery_info.to_json(),
            // Celery's is the pool process running it: none before the run starts.
            "worker_pid": match self.stage {
                Stage::Active(_) => Value::from(std::process::id()),
                _ => Value::Null,
            },
        })
    }

    /// The `scheduled` entry: `{"eta", "priority", "request"}`. `priority` is that of Celery's
    /// timer entry, which its consumer sets to 6 for every ETA task (the message's priority is
    /// in `request.delivery_info`).
    pub(crate) fn scheduled_info(&self, hostname: &str) -> Option<Value> {
        match self.stage {
            Stage::Scheduled(eta) => Some(serde_json::json!({
                "eta": eta.to_rfc3339(),
                "priority": ETA_TIMER_PRIORITY,
                "request": self.info(hostname),
            })),
            _ => None,
        }
    }
}

/// Where a held message is.
enum Phase {
    /// Fetched; its handling has not taken it yet (or never will: not decodable, unknown task).
    Fetched,
    /// Handled, waiting for an execution slot (or a rate-limit turn).
    Reserved,
    /// Handled, waiting for its ETA.
    Scheduled(DateTime<Utc>),
    /// Running since `since` (unix time).
    Running {
        since: f64,
        /// Stops the run (`revoke(terminate=True)`, the end of a warm shutdown's grace); taken
        /// by whoever stops it.
        abort: Option<AbortHandle>,
        /// The message, kept so an early-acked run stopped at shutdown can be put back.
        delivery: Delivery,
    },
    /// The run is over and its outcome is being recorded and settled: a warm shutdown waits for
    /// it and never gives it back (it would run twice).
    Finishing { since: f64 },
    /// Its handling ended without settling it (a warm shutdown began): given back at the end of
    /// the shutdown.
    Left,
}

/// One held message.
struct Entry {
    phase: Phase,
    /// Acked (or otherwise out of this worker's hands in the broker: rejected, dead-lettered).
    acked: bool,
    /// The request, once decoded and known (for inspection).
    request: Option<Request>,
}

impl Entry {
    /// Whether a handling (a [`Tracking`]) has the entry: removed when that ends, if acked.
    fn handled(&self) -> bool {
        !matches!(self.phase, Phase::Fetched | Phase::Left)
    }
}

/// A run stopped by a warm shutdown (see [`InFlight::stop_running`]).
pub(crate) struct Stopped {
    /// The message.
    pub(crate) delivery: Delivery,
    /// Whether it was acked before its run (then it must be put back).
    pub(crate) acked: bool,
}

/// The held messages by delivery tag, and per-task-name totals (`stats.total`).
#[derive(Default)]
pub(crate) struct InFlight {
    entries: Mutex<HashMap<String, Entry>>,
    totals: Mutex<HashMap<String, u64>>,
}

/// A message's handling in the table: dropped, the entry goes if the message is out of this
/// worker's hands, else stays (unacked, to be given back at the end of a shutdown).
pub(crate) struct Tracking {
    table: Arc<InFlight>,
    tag: String,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.table.entries.lock() {
            if let Some(e) = entries.get_mut(&self.tag) {
                if e.acked {
                    entries.remove(&self.tag);
                } else {
                    e.phase = Phase::Left;
                    e.request = None;
                }
            }
        }
    }
}

impl Tracking {
    fn with<R>(&self, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let mut entries = self.table.entries.lock().expect("in-flight lock");
        entries.get_mut(&self.tag).map(f)
    }

    /// Waiting for its ETA.
    pub(crate) fn scheduled(&self, eta: DateTime<Utc>) {
        self.with(|e| e.phase = Phase::Scheduled(eta));
    }

    /// Waiting for a slot again (its ETA came).
    pub(crate) fn reserved(&self) {
        self.with(|e| e.phase = Phase::Reserved);
    }

    /// Running from now (inspect `active`); `delivery` is its message.
    pub(crate) fn started(&self, delivery: &Delivery) {
        let name = self.with(|e| {
            e.phase = Phase::Running {
                since: crate::observe::events::timestamp(),
                abort: None,
                delivery: delivery.clone(),
            };
            e.request.as_ref().map(|r| r.name.clone())
        });
        if let Some(Some(name)) = name {
            *self
                .table
                .totals
                .lock()
                .expect("totals lock")
                .entry(name)
                .or_default() += 1;
        }
    }

    /// The run was spawned: `abort` stops it.
    pub(crate) fn attach(&self, abort: AbortHandle) {
        self.with(|e| {
            if let Phase::Running { abort: slot, .. } = &mut e.phase {
                *slot = Some(abort);
            }
        });
    }

    /// The run is over; its outcome is being recorded.
    pub(crate) fn finishing(&self) {
        self.with(|e| {
            if let Phase::Running { since, .. } = e.phase {
                e.phase = Phase::Finishing { since };
            }
        });
    }
}

impl InFlight {
    /// Hold a fetched message (its `unacked_index` score is kept fresh from now on).
    pub(crate) fn hold(&self, tag: &str) {
        self.entries.lock().expect("in-flight lock").insert(
            tag.to_string(),
            Entry {
                phase: Phase::Fetched,
                acked: false,
                request: None,
            },
        );
    }

    /// The message is out of this worker's hands in the broker (acked, rejected, dead-lettered,
    /// given back); the entry goes now unless a handling still has it.
    pub(crate) fn release(&self, tag: &str) {
        let mut entries = self.entries.lock().expect("in-flight lock");
        if let Some(e) = entries.get_mut(tag) {
            e.acked = true;
            if !e.handled() {
                entries.remove(tag);
            }
        }
    }

    /// The handling of a decoded message of a known task takes its entry (reserved); it leaves
    /// the table, or is left for the shutdown, when the returned guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, delivery: &Delivery, msg: &TaskMessage) -> Tracking {
        let request = Request::of(delivery, msg);
        let tag = delivery.delivery_tag.clone();
        let mut entries = self.entries.lock().expect("in-flight lock");
        let e = entries.entry(tag.clone()).or_insert(Entry {
            phase: Phase::Fetched,
            acked: false,
            request: None,
        });
        e.phase = Phase::Reserved;
        e.request = Some(request);
        drop(entries);
        Tracking {
            table: self.clone(),
            tag,
        }
    }

    /// The tags held unacked (waiting, ETA-held, running with late ack, left by a shutdown).
    pub(crate) fn held_tags(&self) -> Vec<String> {
        let entries = self.entries.lock().expect("in-flight lock");
        entries
            .iter()
            .filter(|(_, e)| !e.acked)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// What a shutdown gives back: the unacked messages except the finishing ones; and how many
    /// finishing ones are left unacked.
    pub(crate) fn to_give_back(&self) -> (Vec<String>, usize) {
        let entries = self.entries.lock().expect("in-flight lock");
        let mut finishing = 0;
        let mut tags = Vec::new();
        for (tag, e) in entries.iter().filter(|(_, e)| !e.acked) {
            match e.phase {
                Phase::Finishing { .. } => finishing += 1,
                _ => tags.push(tag.clone()),
            }
        }
        (tags, finishing)
    }

    /// Abort every run (the end of a warm shutdown's grace) and return their messages.
    pub(crate) fn stop_running(&self) -> Vec<Stopped> {
        let mut entries = self.entries.lock().expect("in-flight lock");
        let mut stopped = Vec::new();
        for e in entries.values_mut() {
            if let Phase::Running {
                abort, delivery, ..
            } = &mut e.phase
            {
                if let Some(abort) = abort.take() {
                    abort.abort();
                    stopped.push(Stopped {
                        delivery: delivery.clone(),
                        acked: e.acked,
                    });
                }
            }
        }
        stopped
    }

    /// Abort the runs of task `id` (`revoke(terminate=True)`); whether one was running.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        let mut entries = self.entries.lock().expect("in-flight lock");
        let mut any = false;
        for e in entries.values_mut() {
            if e.request.as_ref().is_none_or(|r| r.id != id) {
                continue;
            }
            if let Phase::Running { abort, .. } = &mut e.phase {
                if let Some(abort) = abort.take() {
                    abort.abort();
                    any = true;
                }
            }
        }
        any
    }

    /// Runs whose outcome is being recorded.
    pub(crate) fn finishing(&self) -> usize {
        let entries = self.entries.lock().expect("in-flight lock");
        entries
            .values()
            .filter(|e| matches!(e.phase, Phase::Finishing { .. }))
            .count()
    }

    /// Tasks running now (not yet stopped).
    pub(crate) fn running(&self) -> usize {
        self.counts().running
    }

    /// The counts the metrics show.
    pub(crate) fn counts(&self) -> Counts {
        let entries = self.entries.lock().expect("in-flight lock");
        let mut counts = Counts::default();
        for e in entries.values() {
            if !e.acked {
                counts.held += 1;
            }
            if matches!(e.phase, Phase::Running { abort: Some(_), .. }) {
                counts.running += 1;
                if !e.acked {
                    counts.running_held += 1;
                }
            }
        }
        counts
    }

    /// Snapshot of the requests handled now, as remote inspection shows them.
    pub(crate) fn requests(&self) -> Vec<Request> {
        let entries = self.entries.lock().expect("in-flight lock");
        entries
            .values()
            .filter_map(|e| {
                let stage = match e.phase {
                    Phase::Reserved => Stage::Reserved,
                    Phase::Scheduled(eta) => Stage::Scheduled(eta),
                    Phase::Running { since, .. } | Phase::Finishing { since } => {
                        Stage::Active(since)
                    }
                    Phase::Fetched | Phase::Left => return None,
                };
                let mut r = e.request.clone()?;
                r.stage = stage;
                r.acknowledged = e.acked;
                Some(r)
            })
            .collect()
    }

    /// Tasks started since the worker started, by name (`stats.total`).
    pub(crate) fn totals(&self) -> HashMap<String, u64> {
        self.totals.lock().expect("totals lock").clone()
    }
}

/// Counts of held messages.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    /// Held unacked.
    pub(crate) held: usize,
    /// Running.
    pub(crate) running: usize,
    /// Running and held unacked (late ack).
    pub(crate) running_held: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(stage: Stage) -> Request {
        Request {
            id: "id".into(),
            name: "t.add".into(),
            args: serde_json::json!([1, 2]),
            kwargs: serde_json::json!({}),
            delivery_info: HeldDelivery {
                routing_key: "celery".into(),
                redelivered: true,
                ..HeldDelivery::default()
            },
            stage,
            acknowledged: false,
            stamps: Map::new(),
        }
    }

    #[test]
    fn scheduled_entries_read_as_celerys() {
        let eta = Utc::now();
        let entry = request(Stage::Scheduled(eta))
            .scheduled_info("w@h")
            .expect("scheduled");
        assert_eq!(entry["priority"], 6, "{entry}");
        assert_eq!(entry["request"]["worker_pid"], Value::Null, "{entry}");
        assert_eq!(
            entry["request"]["delivery_info"],
            serde_json::json!({"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": true}),
            "{entry}"
        );
        assert!(request(Stage::Reserved).scheduled_info("w@h").is_none());
    }

    #[test]
    fn only_a_running_request_has_a_worker_pid() {
        assert_eq!(
            request(Stage::Reserved).info("w@h")["worker_pid"],
            Value::Null
        );
        assert_eq!(
            request(Stage::Active(1.0)).info("w@h")["worker_pid"],
            std::process::id()
        );
    }

    fn delivery(tag: &str) -> Delivery {
        Delivery {
            raw: Vec::new(),
            queue: "celery".into(),
            delivery_tag: tag.into(),
            exchange: String::new(),
            routing_key: "celery".into(),
        }
    }

    fn message(id: &str) -> TaskMessage {
        TaskMessage::new(id, "t.add", vec![], Map::new())
    }

    #[tokio::test]
    async fn one_entry_follows_a_message_until_it_leaves() {
        let table = Arc::new(InFlight::default());
        // Not decodable: held, then dead-lettered (released): gone.
        table.hold("bad");
        assert_eq!(table.held_tags(), vec!["bad"]);
        table.release("bad");
        assert!(table.held_tags().is_empty());

        table.hold("a");
        let d = delivery("a");
        let tracking = table.track(&d, &message("ida"));
        assert_eq!(table.requests()[0].stage, Stage::Reserved);
        tracking.started(&d);
        let run = tokio::spawn(std::future::pending::<()>());
        tracking.attach(run.abort_handle());
        assert!(matches!(table.requests()[0].stage, Stage::Active(_)));
        assert_eq!(table.counts().running_held, 1);
        // Early ack: no longer held, still running.
        table.release("a");
        assert!(table.held_tags().is_empty());
        assert_eq!(table.running(), 1);
        assert!(table.requests()[0].acknowledged);
        assert_eq!(table.totals()["t.add"], 1);
        drop(tracking);
        assert!(table.requests().is_empty());
        assert_eq!(table.counts().held, 0);
        run.abort();
    }

    #[tokio::test]
    async fn a_warm_shutdown_gives_back_all_but_the_finishing() {
        let table = Arc::new(InFlight::default());
        let (ready, running, early, finishing) = (
            delivery("ready"),
            delivery("running"),
            delivery("early"),
            delivery("finishing"),
        );
        let mut guards = Vec::new();
        let mut runs = Vec::new();
        for d in [&ready, &running, &early, &finishing] {
            table.hold(&d.delivery_tag);
            guards.push(table.track(d, &message(&d.delivery_tag)));
        }
        for (d, g) in [&running, &early, &finishing].into_iter().zip(&guards[1..]) {
            g.started(d);
            let run = tokio::spawn(std::future::pending::<()>());
            g.attach(run.abort_handle());
            runs.push(run);
        }
        table.release("early");
        guards[3].finishing();
        assert_eq!(table.finishing(), 1);
        assert!(
            !table.terminate("finishing"),
            "a finishing run is not stopped"
        );
        let stopped = table.stop_running();
        let mut acked: Vec<_> = stopped
            .iter()
            .map(|s| (s.delivery.delivery_tag.as_str(), s.acked))
            .collect();
        acked.sort();
        assert_eq!(acked, [("early", true), ("running", false)]);
        for run in runs.drain(..2) {
            assert!(run.await.expect_err("aborted").is_cancelled());
        }
        // Their handlings end without settling: left for the give-back.
        guards.drain(..3);
        let (mut tags, finishing) = table.to_give_back();
        tags.sort();
        assert_eq!(
            (tags, finishing),
            (vec!["ready".to_string(), "running".into()], 1)
        );
        assert!(table.requests().iter().all(|r| r.id == "finishing"));
        table.release("ready");
        table.release("running");
        assert_eq!(table.held_tags(), vec!["finishing"]);
        runs[0].abort();
    }

    #[tokio::test]
    async fn terminate_stops_the_runs_of_a_task_id_once() {
        let table = Arc::new(InFlight::default());
        let d = delivery("t1");
        table.hold("t1");
        let g = table.track(&d, &message("id1"));
        assert!(!table.terminate("id1"), "not running yet");
        g.started(&d);
        let run = tokio::spawn(std::future::pending::<()>());
        g.attach(run.abort_handle());
        assert!(table.terminate("id1"));
        assert!(!table.terminate("id1"), "already stopped");
        assert!(run.await.expect_err("aborted").is_cancelled());
        assert!(table.stop_running().is_empty());
    }
}
