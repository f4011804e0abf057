//! Seeded structured fuzzing of the whole path a queue element takes: Redis list → fetch script →
//! decode → dispatch → a trivial task (`t.echo`, `t.add`) → result and ack. Each input is a kombu
//! envelope mutated by a seeded RNG (headers replaced by odd JSON, removed or retyped; content
//! type, encoding and body swapped for other or broken ones; priorities, delivery info, past or
//! broken ETAs and expiries; bytes flipped or cut). Inputs are pushed in batches to a private
//! Redis that the real test worker consumes; after each batch every input must be accounted for —
//! a result stored under its id, the element intact in the dead-letter list (one dead letter per
//! input), or acked with `ignore_result` — with nothing left queued or unacked, no dead letter
//! saying the worker panicked, no panic printed on the worker's stderr (caught or not), and the
//! worker alive. Future ETAs are never generated, nor pushed when a byte flip makes one (such a
//! message is rightly held, not settled).
//! An input whose id is already in the batch under way waits for a later batch, so that each
//! result key of a batch belongs to one input.
//!
//!   celeriac-fuzz-path --worker-bin target/release/celeriac-test-worker [--seed N]
//!                      [--inputs N] [--batch N] [--time-limit SECS] [--concurrency N]
//!                      [--early-ack]
//!   celeriac-fuzz-path --seed N --dump N   # input `fz-N`'s element, byte for byte
//!
//! Prints the totals last; exits 1 on a finding.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine;
use celeriac_broker_bridge::codec::WireTime;
use celeriac_testkit::RedisServer;
use clap::Parser;
use redis::Commands;
use serde_json::{json, Value};

#[derive(Parser)]
struct Opts {
    /// The test worker binary.
    #[arg(long, required_unless_present = "dump")]
    worker_bin: Option<PathBuf>,
    /// RNG seed (the run is a function of it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many inputs.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
    /// Inputs per batch.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Stop after this many seconds (the batch under way is finished).
    #[arg(long, default_value_t = 600)]
    time_limit: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Run the worker with early acks (the default, `task_acks_late` off) instead of late ones:
    /// the message is acked before the task runs, and its result must still be stored.
    #[arg(long)]
    early_ack: bool,
    /// Seconds a batch may go without progress (fewer messages queued or held; with early
    /// acks, more results stored) before what is left counts as stuck or lost.
    #[arg(long, default_value_t = 30)]
    settle_timeout: u64,
    /// Seconds between two progress lines on stderr.
    #[arg(long, default_value_t = 10)]
    progress_every: u64,
    /// Write input number N (`fz-N`) of this seed to stdout, byte for byte, and exit (to
    /// replay a finding by hand).
    #[arg(long, value_name = "N")]
    dump: Option<u64>,
}

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// An odd JSON value: wrong types, extremes, nesting, long or strange strings.
fn odd_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 10 } else { 13 }) {
        0 => Value::Null,
        1 => json!(rng.chance(2)),
        2 => json!(rng.next() as i64),
        3 => json!(-1),
        4 => serde_json::from_str("1e308").expect("number"),
        5 => serde_json::from_str("123456789012345678901234567890").expect("number"),
        6 => json!(""),
        7 => json!("\u{0}\u{1f}\u{7f}é\u{202e}"),
        8 => json!("x".repeat(rng.below(5000) as usize)),
        9 => json!(f64::from_bits(rng.next()).to_string()),
        10 => Value::Array(
            (0..rng.below(4))
                .map(|_| odd_value(rng, depth + 1))
                .collect(),
        ),
        11 => {
            let mut m = serde_json::Map::new();
            for i in 0..rng.below(4) {
                m.insert(format!("k{i}"), odd_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => {
            let mut v = json!(1);
            for _ in 0..rng.below(200) {
                v = json!([v]);
            }
            v
        }
    }
}

const HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "stamped_headers",
    "stamps",
    "replaced_task_nesting",
    "priority",
];

/// Python truthiness, as Celery reads `ignore_result`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// One input: the element's bytes, the id its result would be stored under (when it has one), and
/// whether its ETA, as the worker will read it, is in the future (a byte flip can make one:
/// `2001` → `2401`; such a message is rightly held, not settled, so it is not pushed).
fn input(rng: &mut Rng, n: u64) -> (Vec<u8>, Option<String>, bool) {
    let id = format!("fz-{n}");
    let (task, args) = if rng.chance(2) {
        ("t.echo", json!([odd_value(rng, 0)]))
    } else {
        ("t.add", json!([rng.below(100), rng.below(100)]))
    };
    let mut body =
        json!([args, {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let mut headers = json!({
        "lang": "py", "task": task, "id": id, "shadow": null, "eta": null, "expires": null,
        "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
        "root_id": id, "parent_id": null, "argsrepr": "", "kwargsrepr": "{}",
        "origin": "fuzz@host", "ignore_result": false,
    });
    let mut content_type = "application/json".to_string();
    let mut body_encoding = "base64".to_string();
    let mut props = json!({
        "correlation_id": id, "reply_to": "r", "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "priority": 0, "body_encoding": "base64", "delivery_tag": format!("tag-{n}"),
    });
    for _ in 0..rng.below(4) {
        match rng.below(12) {
            0 | 1 => {
                let h = *rng.pick(HEADERS);
                headers[h] = odd_value(rng, 0);
            }
            2 => {
                let h = *rng.pick(HEADERS);
                headers.as_object_mut().expect("object").remove(h);
            }
            3 => {
                headers["eta"] = json!(rng.pick(&[
                    "2001-01-01T00:00:00+00:00",
                    "not a date",
                    "1970-01-01T00:00:00",
                    "-0001-09-13T00:00:00Z",
                ]))
            }
            4 => headers["expires"] = json!(rng.pick(&["2001-01-01T00:00:00Z", "soon", "-1"])),
            5 => {
                content_type = rng
                    .pick(&[
                        "application/x-yaml",
                        "application/x-python-serialize",
                        "application/x-msgpack",
                        "text/plain",
                        "",
                    ])
                    .to_string()
            }
            6 => body = odd_value(rng, 0),
            7 => body_encoding = rng.pick(&["utf-8", "base32", "", "gzip"]).to_string(),
            8 => props["priority"] = odd_value(rng, 0),
            9 => props["delivery_info"] = odd_value(rng, 0),
            10 => headers["timelimit"] = json!([odd_value(rng, 1), odd_value(rng, 1)]),
            _ => headers["task"] = json!(rng.pick(&["t.nope", "", "t.echo\u{0}", "t.add"])),
        }
    }
    props["body_encoding"] = json!(body_encoding);
    let text = serde_json::to_vec(&body).expect("body");
    let body_text = if body_encoding == "base64" {
        base64::engine::general_purpose::STANDARD.encode(&text)
    } else {
        String::from_utf8_lossy(&text).into_owned()
    };
    let envelope = json!({
        "body": body_text, "content-encoding": "utf-8", "content-type": content_type,
        "headers": headers, "properties": props,
    });
    let mut raw = serde_json::to_vec(&envelope).expect("envelope");
    if rng.chance(20) {
        for _ in 0..=rng.below(3) {
            let at = rng.below(raw.len() as u64) as usize;
            raw[at] ^= 1 << rng.below(8);
        }
    } else if rng.chance(50) {
        raw.truncate(rng.below(raw.len() as u64) as usize);
    }
    // The id as the worker will read it, after any byte flips.
    let parsed = serde_json::from_slice::<Value>(&raw).ok();
    let headers = parsed.as_ref().map(|v| &v["headers"]);
    let expected = headers
        .and_then(|h| h.get("id"))
        .and_then(Value::as_str)
        .map(String::from);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let future_eta = headers
        .and_then(|h| h.get("eta"))
        .and_then(Value::as_str)
        .and_then(WireTime::parse)
        .is_some_and(|eta| eta.utc.timestamp() > now);
    (raw, expected, future_eta)
}

#[derive(Default)]
struct Totals {
    inputs: u64,
    results: u64,
    dead_lettered: u64,
    lost: u64,
    panics: u64,
    ignored: u64,
    stuck: u64,
}

/// One input of a batch: its number (`fz-N`, for `--dump`), its element and the id its result
/// would be stored under.
struct Input {
    n: u64,
    raw: Vec<u8>,
    id: Option<String>,
}

/// The inputs still to push, in order: generated from the seed, with those whose id is already
/// in the batch under way held over to a later batch, so that each result key of a batch belongs
/// to exactly one input.
struct Source {
    rng: Rng,
    generated: u64,
    limit: u64,
    held_over: VecDeque<Input>,
    /// Inputs not pushed: a byte flip made their ETA a future one.
    future_eta: u64,
}

impl Source {
    fn batch(&mut self, size: usize) -> Vec<Input> {
        let mut ids = HashSet::new();
        let mut batch = Vec::with_capacity(size);
        let mut later = VecDeque::new();
        while batch.len() < size {
            let next = match self.held_over.pop_front() {
                Some(input) => input,
                None if self.generated < self.limit => {
                    let n = self.generated;
                    self.generated += 1;
                    let (raw, id, future_eta) = input(&mut self.rng, n);
                    if future_eta {
                        self.future_eta += 1;
                        continue;
                    }
                    Input { n, raw, id }
                }
                None => break,
            };
            match &next.id {
                Some(id) if !ids.insert(id.clone()) => later.push_back(next),
                _ => batch.push(next),
            }
        }
        later.extend(self.held_over.drain(..));
        self.held_over = later;
        batch
    }
}

fn note(findings: &mut Vec<String>, finding: String) {
    eprintln!("{finding}");
    if findings.len() < 20 {
        findings.push(finding);
    }
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if let Some(n) = opts.dump {
        let mut rng = Rng(opts.seed);
        let mut raw = Vec::new();
        for i in 0..=n {
            raw = input(&mut rng, i).0;
        }
        std::io::Write::write_all(&mut std::io::stdout(), &raw)?;
        return Ok(());
    }
    let redis_server = RedisServer::start()?;
    let url = redis_server.url(0);
    // Kept when there is a finding (removed otherwise). The worker's log is opened for appending
    // so that it can be emptied after each batch without a finding; its stderr (where a panic
    // prints, caught or not) is kept whole and read after each batch.
    let logs = tempfile::Builder::new()
        .prefix("celeriac-fuzz-path")
        .tempdir()?
        .keep();
    let log_path = logs.join("worker.log");
    let stderr_path = logs.join("stderr.log");
    let append = |path: &PathBuf| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let log = append(&log_path)?;
    let mut worker = Worker(
        Command::new(opts.worker_bin.as_ref().context("--worker-bin")?)
            .args([
                "-n",
                "fuzz@host",
                "-l",
                "WARN",
                "-c",
                &opts.concurrency.to_string(),
            ])
            .env("CELERY_BROKER_URL", &url)
            .env("CELERY_RESULT_BACKEND", &url)
            .env("CELERY_TASK_ACKS_LATE", (!opts.early_ack).to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(append(&stderr_path)?))
            .spawn()
            .context("start the worker")?,
    );
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    let mut source = Source {
        rng: Rng(opts.seed),
        generated: 0,
        limit: opts.inputs,
        held_over: VecDeque::new(),
        future_eta: 0,
    };
    let mut t = Totals::default();
    let started = Instant::now();
    let limit = Duration::from_secs(opts.time_limit);
    let settle = Duration::from_secs(opts.settle_timeout);
    let mut findings = Vec::new();
    let mut stderr_seen = 0usize;
    let mut last_progress = Instant::now();
    let mut next = source.batch(opts.batch);
    while !next.is_empty() && started.elapsed() < limit {
        let batch = std::mem::take(&mut next);
        let findings_before = findings.len();
        let mut pipe = redis::pipe();
        for input in &batch {
            pipe.lpush("celery", &input.raw).ignore();
        }
        pipe.query::<()>(&mut conn)?;
        // The next batch is made while the worker takes this one.
        next = source.batch(opts.batch);
        let mut stuck: Vec<Vec<u8>> = Vec::new();
        // The settle timeout counts from the last progress (fewer queued or held), so a worker
        // starved of CPU by the rest of the machine is waited for while it moves.
        let mut deadline = Instant::now() + settle;
        let mut left_before = usize::MAX;
        loop {
            let (queued, held): (usize, usize) = redis::pipe()
                .llen("celery")
                .hlen("unacked")
                .query(&mut conn)?;
            if queued == 0 && held == 0 {
                break;
            }
            if queued + held < left_before {
                left_before = queued + held;
                deadline = Instant::now() + settle;
            }
            if let Some(status) = worker.try_wait()? {
                bail!("the worker exited ({status}); logs in {}", logs.display());
            }
            if Instant::now() > deadline {
                if queued > 0 {
                    bail!(
                        "batch not consumed: {queued} queued, none taken for {} s; logs in {}",
                        settle.as_secs(),
                        logs.display()
                    );
                }
                // Fetched and never settled: a finding; taken out so the run goes on.
                let left: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall("unacked")?;
                for (tag, entry) in left {
                    t.stuck += 1;
                    note(
                        &mut findings,
                        format!("stuck unacked: {}", String::from_utf8_lossy(&entry)),
                    );
                    redis::pipe()
                        .hdel("unacked", &tag)
                        .zrem("unacked_index", &tag)
                        .query::<()>(&mut conn)?;
                    stuck.push(entry);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let keys: Vec<String> = batch
            .iter()
            .map(|i| {
                format!(
                    "celery-task-meta-{}",
                    i.id.as_deref().unwrap_or("\u{0}none")
                )
            })
            .collect();
        // Every input is a result, a dead letter (each counted once: identical elements need as
        // many dead letters), stuck, or acked with ignore_result. With early acks a result may
        // still be on its way when the queue and `unacked` are empty: what is missing is looked
        // for again until the settle timeout passes with none of it found.
        let mut missing: Vec<usize> = (0..batch.len()).collect();
        let mut dead: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut dead_read = 0isize;
        let mut deadline = Instant::now() + settle;
        loop {
            let more: Vec<Vec<u8>> = conn.lrange("celeriac.dead_letter", dead_read, -1)?;
            dead_read += more.len() as isize;
            for d in more {
                *dead.entry(d).or_default() += 1;
            }
            let wanted: Vec<&String> = missing.iter().map(|&i| &keys[i]).collect();
            let metas: Vec<Option<Vec<u8>>> = if wanted.is_empty() {
                Vec::new()
            } else {
                redis::cmd("MGET").arg(&wanted).query(&mut conn)?
            };
            let mut still = Vec::new();
            for (&i, meta) in missing.iter().zip(&metas) {
                let raw = &batch[i].raw;
                if let Some(count) = dead.get_mut(raw).filter(|c| **c > 0) {
                    *count -= 1;
                    t.dead_lettered += 1;
                } else if meta.is_some() {
                    t.results += 1;
                } else if stuck
                    .iter()
                    .any(|e| e.windows(raw.len()).any(|w| w == raw.as_slice()))
                {
                    // Counted as stuck above.
                } else if serde_json::from_slice::<Value>(raw)
                    .ok()
                    .and_then(|v| v["headers"].get("ignore_result").map(truthy))
                    .unwrap_or(false)
                {
                    // Taken and acked (nothing is left queued or unacked), no result by request.
                    t.ignored += 1;
                } else {
                    still.push(i);
                }
            }
            if still.len() < missing.len() {
                deadline = Instant::now() + settle;
            }
            missing = still;
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(if opts.early_ack { 20 } else { 200 }));
        }
        for &i in &missing {
            let input = &batch[i];
            t.lost += 1;
            note(
                &mut findings,
                format!(
                    "lost: input {} (id {:?}): {}",
                    input.n,
                    input.id,
                    String::from_utf8_lossy(&input.raw)
                ),
            );
        }
        t.inputs += batch.len() as u64;
        let reasons: Vec<Vec<u8>> = conn.hvals("celeriac.dead_letter.reasons")?;
        for r in reasons
            .iter()
            .filter(|r| r.windows(8).any(|w| w == b"panicked"))
        {
            t.panics += 1;
            note(
                &mut findings,
                format!("dead letter for a panic: {}", String::from_utf8_lossy(r)),
            );
        }
        let stderr = std::fs::read(&stderr_path)?;
        if let Some(new) = stderr.get(stderr_seen..) {
            let text = String::from_utf8_lossy(new);
            for line in text.lines().filter(|l| l.contains("panicked")) {
                t.panics += 1;
                note(&mut findings, format!("worker stderr: {line}"));
            }
        }
        stderr_seen = stderr.len();
        let mut clean = redis::pipe();
        clean
            .del("celeriac.dead_letter")
            .ignore()
            .del("celeriac.dead_letter.reasons")
            .ignore();
        for chunk in keys.chunks(500) {
            clean.del(chunk).ignore();
        }
        clean.query::<()>(&mut conn)?;
        if findings.len() == findings_before {
            log.set_len(0)?;
        }
        if last_progress.elapsed() >= Duration::from_secs(opts.progress_every) {
            last_progress = Instant::now();
            eprintln!(
                "{:.0} s: {} inputs, {:.0}/s, results {}, dead-lettered {}, ignored {}, lost {}, stuck {}, panics {}",
                started.elapsed().as_secs_f64(),
                t.inputs,
                t.inputs as f64 / started.elapsed().as_secs_f64(),
                t.results,
                t.dead_lettered,
                t.ignored,
                t.lost,
                t.stuck,
                t.panics
            );
        }
    }
    let alive = worker.try_wait()?.is_none();
    drop(worker);
    let secs = started.elapsed().as_secs_f64();
    for f in &findings {
        println!("{f}");
    }
    println!(
        "seed {}{}: {} executions in {:.0} s ({:.0}/s): {} results stored, {} dead-lettered intact, {} acked with ignore_result, {} lost, {} stuck unacked, {} panics; worker alive: {}; {} not pushed (a byte flip made a future ETA)",
        opts.seed,
        if opts.early_ack { " (early acks)" } else { "" },
        t.inputs,
        secs,
        t.inputs as f64 / secs,
        t.results,
        t.dead_lettered,
        t.ignored,
        t.lost,
        t.stuck,
        t.panics,
        alive,
        source.future_eta
    );
    if t.lost > 0 || t.stuck > 0 || t.panics > 0 || !alive {
        println!("worker logs kept in {}", logs.display());
        std::process::exit(1);
    }
    std::fs::remove_dir_all(&logs)?;
    Ok(())
}

/// The worker process, killed when the run ends however it ends (an error included).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}
