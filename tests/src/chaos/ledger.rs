//! What the chaos run knows about every task: what was sent (the producers' manifests), which
//! ids were in flight on a worker when it was killed, and the final audit against Redis.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use celeriac_broker_bridge::signing::{CertStore, Digest, Verifier};
use redis::Commands;
use serde_json::Value;

/// Reads stored results: plain JSON, or signed by Celery's `auth` serializer (a signed run),
/// whose signature is checked against the certificate store first.
#[derive(Debug, Default)]
pub struct Results {
    verifier: Option<Verifier>,
}

impl Results {
    /// Results signed by a signer of the store at `store` (a file, directory or glob).
    pub fn signed(store: &str) -> Result<Results> {
        let store = CertStore::load(store).context("load the certificate store")?;
        Ok(Results {
            verifier: Some(Verifier::new(store, Digest::Sha256)),
        })
    }

    /// The result meta stored under `celery-task-meta-<id>`; `None` when it cannot be read (or,
    /// signed, its signature does not hold).
    pub fn read(&self, raw: &str) -> Option<Value> {
        match &self.verifier {
            None => serde_json::from_str(raw).ok(),
            Some(v) => v.open(raw.as_bytes()).ok()?.value().ok(),
        }
    }

    /// Whether `raw` is a final state (SUCCESS or FAILURE).
    pub fn is_final(&self, raw: &str) -> bool {
        self.read(raw)
            .is_some_and(|m| matches!(m["status"].as_str(), Some("SUCCESS" | "FAILURE")))
    }
}

/// The kind of a task in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `t.chaos`, no ETA.
    Plain,
    /// `t.chaos` with a countdown of 1–6 s.
    Eta,
    /// `t.chaos` that asks for one retry (two executions expected).
    Retry,
    /// A chord header member (`t.chaos`).
    Part,
    /// A chord body (`t.chaos_sum`).
    Body,
    /// The declarative query task `chaos.get_item` on Postgres.
    Query,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "plain" => Kind::Plain,
            "eta" => Kind::Eta,
            "retry" => Kind::Retry,
            "part" => Kind::Part,
            "body" => Kind::Body,
            "query" => Kind::Query,
            _ => return None,
        })
    }

    /// Executions recorded in the tally for one successful run (query tasks record none).
    pub fn expected_executions(self) -> u64 {
        match self {
            Kind::Retry => 2,
            Kind::Query => 0,
            _ => 1,
        }
    }

    /// The name used in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Eta => "eta",
            Kind::Retry => "retry",
            Kind::Part => "chord part",
            Kind::Body => "chord body",
            Kind::Query => "query",
        }
    }
}

/// One task sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Its kind.
    pub kind: Kind,
    /// The result it must end with.
    pub expected: Value,
    /// A chord body's parts (the ids of its header), empty for every other kind.
    pub parts: Vec<String>,
}

/// Every task sent, by id.
pub fn read_manifests(paths: &[impl AsRef<Path>]) -> Result<HashMap<String, Sent>> {
    let mut out = HashMap::new();
    let mut chords: Vec<(String, Vec<String>)> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path.as_ref())
            .with_context(|| format!("read {}", path.as_ref().display()))?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(id), Some(kind), Some(expected)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if kind == "chord" {
                if let Ok(parts) = serde_json::from_str(expected) {
                    chords.push((id.to_string(), parts));
                }
                continue;
            }
            let (Some(kind), Ok(expected)) = (Kind::parse(kind), serde_json::from_str(expected))
            else {
                continue;
            };
            out.insert(
                id.to_string(),
                Sent {
                    kind,
                    expected,
                    parts: Vec::new(),
                },
            );
        }
    }
    for (body, parts) in chords {
        if let Some(sent) = out.get_mut(&body) {
            sent.parts = parts;
        }
    }
    Ok(out)
}

/// The task id of a kombu envelope (Celery's protocol 2 keeps it in `headers.id`).
fn envelope_task_id(envelope: &Value) -> Option<String> {
    envelope["headers"]["id"].as_str().map(String::from)
}

/// Task ids held in `unacked` right now.
pub fn unacked_ids(broker: &mut redis::Connection) -> Result<HashSet<String>> {
    let raw: Vec<String> = broker.hvals("unacked")?;
    Ok(raw
        .iter()
        .filter_map(|r| {
            // kombu stores `[envelope, exchange, routing_key]`.
            let v: Value = serde_json::from_str(r).ok()?;
            envelope_task_id(&v[0])
        })
        .collect())
}

/// Task ids anywhere in the broker: every list of `queues` (with kombu's priority suffixes) and
/// `unacked`.
pub fn ids_in_broker(broker: &mut redis::Connection, queues: &[&str]) -> Result<HashSet<String>> {
    let mut ids = unacked_ids(broker)?;
    for q in queues {
        for suffix in ["", "\x06\x163", "\x06\x166", "\x06\x169"] {
            let items: Vec<String> = broker.lrange(format!("{q}{suffix}"), 0, -1)?;
            ids.extend(
                items
                    .iter()
                    .filter_map(|r| envelope_task_id(&serde_json::from_str::<Value>(r).ok()?)),
            );
        }
    }
    Ok(ids)
}

/// The ids a killed worker may have been running: started and not finished, or finished with
/// their message still unacked (killed between the task's end and its ack). The tally sets of
/// that worker are deleted afterwards.
pub fn in_flight_at_kill(
    tally: &mut redis::Connection,
    broker: &mut redis::Connection,
    node: &str,
) -> Result<HashSet<String>> {
    let running: HashSet<String> = tally.smembers(format!("running:{node}"))?;
    let finished: HashSet<String> = tally.smembers(format!("finished:{node}"))?;
    let unacked = unacked_ids(broker)?;
    let _: () = tally.del(&[format!("running:{node}"), format!("finished:{node}")])?;
    Ok(running
        .into_iter()
        .chain(finished.into_iter().filter(|id| unacked.contains(id)))
        .collect())
}

/// The outcome of the final audit.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Tasks sent.
    pub sent: usize,
    /// Sent, by kind.
    pub sent_by_kind: Vec<(Kind, usize)>,
    /// Final state SUCCESS with the expected result.
    pub succeeded: usize,
    /// SUCCESS with another result than expected.
    pub wrong_result: usize,
    /// FAILURE, by kind and exception type (e.g. `query ConnectionError` while Postgres
    /// restarted).
    pub failed: Vec<(String, usize)>,
    /// No final state, but the message is still in a queue or unacked (not finished in time).
    pub unfinished: usize,
    /// No final state and no message anywhere: lost.
    pub lost: usize,
    /// A retry task whose two runs both ended, its message gone, but whose stored state is the
    /// RETRY a Python worker wrote: Celery publishes the retry before it stores RETRY, and its
    /// Redis backend's guard against overwriting SUCCESS is a read then a write, so a stalled
    /// Python process can write RETRY over the retry's SUCCESS. Nothing lost; the state is
    /// Celery's race, counted apart and shown.
    pub stale_retry_by_python: usize,
    /// Executions beyond the expected, explained by a kill while the id was in flight.
    pub duplicates_at_kills: u64,
    /// Chord-body executions beyond the expected, explained by re-runs of the chord's parts (a
    /// part run again after a kill joins again, and Celery's join fires the body whenever its
    /// count reaches the chord's size after its own add).
    pub duplicates_after_part_reruns: u64,
    /// Executions beyond the expected with no kill to explain them.
    pub duplicates_unexplained: u64,
    /// Of which ETA tasks.
    pub eta_duplicates_unexplained: u64,
    /// Of the unexplained, those where the Python worker ran the id at least once.
    pub duplicates_unexplained_with_python: u64,
    /// Ids whose successful result was stored with fewer recorded executions than expected.
    pub missing_executions: usize,
    /// Elements in the dead-letter list.
    pub dead_lettered: u64,
    /// A few example ids of each problem, for the log.
    pub examples: Vec<String>,
}

impl Audit {
    /// Whether every invariant held (unfinished tasks break "every id has a final result").
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.unfinished == 0
            && self.wrong_result == 0
            && self.duplicates_unexplained == 0
            && self.eta_duplicates_unexplained == 0
            && self.missing_executions == 0
            && self.dead_lettered == 0
            && self
                .failed
                .iter()
                .all(|(what, _)| what == "query ConnectionError")
    }
}

/// Compare what was sent with the stored results, the executions and the kills.
pub fn audit(
    sent: &HashMap<String, Sent>,
    broker: &mut redis::Connection,
    tally: &mut redis::Connection,
    killed_in_flight: &HashMap<String, u64>,
    queues: &[&str],
    results: &Results,
) -> Result<Audit> {
    let mut a = Audit {
        sent: sent.len(),
        ..Audit::default()
    };
    let mut by_kind: HashMap<Kind, usize> = HashMap::new();
    for s in sent.values() {
        *by_kind.entry(s.kind).or_default() += 1;
    }
    a.sent_by_kind = by_kind.into_iter().collect();
    a.sent_by_kind.sort();
    let execs: HashMap<String, u64> = tally.hgetall("execs")?;
    let ends: HashMap<String, u64> = tally.hgetall("ends")?;
    let still_there = ids_in_broker(broker, queues)?;
    let ids: Vec<&String> = sent.keys().collect();
    let mut failed: HashMap<String, usize> = HashMap::new();
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|id| format!("celery-task-meta-{id}"))
            .collect();
        let metas: Vec<Option<String>> = broker.mget(&keys)?;
        for (id, meta) in chunk.iter().zip(metas) {
            let task = &sent[*id];
            let meta: Option<Value> = meta.and_then(|m| results.read(&m));
            let status = meta
                .as_ref()
                .and_then(|m| m["status"].as_str())
                .unwrap_or("");
            match status {
                "SUCCESS" => {
                    let meta = meta.as_ref().expect("status read from it");
                    if meta["result"] == task.expected {
                        a.succeeded += 1;
                    } else {
                        a.wrong_result += 1;
                        note(&mut a.examples, format!("wrong result {id}: {meta}"));
                    }
                }
                "FAILURE" => {
                    let result = meta.as_ref().map(|m| &m["result"]);
                    let exc = result
                        .and_then(|r| r["exc_type"].as_str())
                        .unwrap_or("?")
                        .to_string();
                    note(
                        &mut a.examples,
                        format!(
                            "FAILURE {id} ({}): {exc} {}",
                            task.kind.name(),
                            result
                                .map(|r| r["exc_message"].to_string())
                                .unwrap_or_default()
                        ),
                    );
                    *failed
                        .entry(format!("{} {exc}", task.kind.name()))
                        .or_default() += 1;
                }
                _ if still_there.contains(*id) => a.unfinished += 1,
                "RETRY"
                    if task.kind == Kind::Retry
                        && ends.get(*id).copied().unwrap_or(0)
                            >= task.kind.expected_executions()
                        && meta
                            .as_ref()
                            .and_then(|m| m["worker"].as_str())
                            .is_some_and(|w| w.starts_with("py@")) =>
                {
                    a.stale_retry_by_python += 1;
                    note(
                        &mut a.examples,
                        format!("{id} (retry): both runs ended, state RETRY written by the Python worker after the retry's result"),
                    );
                }
                _ => {
                    a.lost += 1;
                    note(&mut a.examples, format!("lost {id} ({status:?})"));
                }
            }
            let ran = execs.get(*id).copied().unwrap_or(0);
            let expected = task.kind.expected_executions();
            if status == "SUCCESS" && ran < expected {
                a.missing_executions += 1;
                note(
                    &mut a.examples,
                    format!("{id} succeeded with {ran} executions recorded"),
                );
            }
            let extra = ran.saturating_sub(expected);
            // A run cut short by a kill is run again in full (a retry task: both runs again).
            let explained =
                extra.min(killed_in_flight.get(*id).copied().unwrap_or(0) * expected.max(1));
            a.duplicates_at_kills += explained;
            let part_reruns: u64 = task
                .parts
                .iter()
                .map(|p| execs.get(p).copied().unwrap_or(0).saturating_sub(1))
                .sum();
            let after_part_reruns = (extra - explained).min(part_reruns);
            a.duplicates_after_part_reruns += after_part_reruns;
            let unexplained = extra - explained - after_part_reruns;
            if unexplained > 0 {
                let runs: Vec<String> = tally.lrange(format!("runs:{id}"), 0, -1)?;
                if runs.iter().any(|node| node.starts_with("py@")) {
                    a.duplicates_unexplained_with_python += unexplained;
                }
                a.duplicates_unexplained += unexplained;
                if task.kind == Kind::Eta {
                    a.eta_duplicates_unexplained += unexplained;
                }
                note(
                    &mut a.examples,
                    format!(
                        "{id} ({}) ran {ran} times, on {}",
                        task.kind.name(),
                        runs.join(" ")
                    ),
                );
            }
        }
    }
    a.failed = failed.into_iter().collect();
    a.failed.sort();
    a.dead_lettered = broker.llen("celeriac.dead_letter")?;
    Ok(a)
}

fn note(examples: &mut Vec<String>, line: String) {
    if examples.len() < 20 {
        examples.push(line);
    }
}
