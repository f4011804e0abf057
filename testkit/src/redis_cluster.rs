//! A private Redis Cluster: 3 primaries and 3 replicas started from `redis-server` on free
//! ports, joined with `redis-cli --cluster create`, killed when dropped.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, RedisServer};

/// Three primaries (slots split evenly) and one replica of each.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    killed: BTreeSet<u16>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// A primary (not a replica).
    pub primary: bool,
    /// Flagged `fail` or `fail?` by the node asked.
    pub failing: bool,
    /// The slot ranges it serves (`(first, last)`, inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Start six nodes and wait until every node reports `cluster_state:ok` and every replica
    /// has synchronised with its primary (a replica that never did is not allowed to take over:
    /// its data age counts from "never").
    pub fn start() -> Result<Self> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start() {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start() -> Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let bus = free_port().to_string();
            nodes.push(RedisServer::start_with_args(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "2000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = RedisCluster {
            nodes,
            killed: BTreeSet::new(),
        };
        cluster.wait_ok(Duration::from_secs(30))?;
        cluster.wait_replicas_synced(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Wait until every live node says `cluster_state:ok` and knows all six nodes.
    pub fn wait_ok(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, "cluster_state:ok on every live node", || {
            self.live_ports().iter().all(|p| {
                let info = self.cli(*p, &["CLUSTER", "INFO"]).unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
            })
        })
    }

    /// Wait until every live replica's link to its primary is up.
    pub fn wait_replicas_synced(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, "every replica synchronised", || {
            self.live_ports().iter().all(|p| {
                let info = self.cli(*p, &["INFO", "replication"]).unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        })
    }

    /// Wait until every live node sees three primaries that are not failing and together serve
    /// all 16384 slots (after a failover: a replica was promoted and everyone knows it).
    pub fn wait_failed_over(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, "a full set of live primaries", || {
            self.live_ports().iter().all(|p| {
                let nodes = self.nodes_seen_by(*p).unwrap_or_default();
                let serving: Vec<&ClusterNode> = nodes
                    .iter()
                    .filter(|n| n.primary && !n.failing && !n.slots.is_empty())
                    .collect();
                let slots: u32 = serving
                    .iter()
                    .flat_map(|n| &n.slots)
                    .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
                    .sum();
                serving.len() == 3
                    && slots == 16384
                    && serving.iter().all(|n| !self.killed.contains(&n.port))
                    && self
                        .cli(*p, &["CLUSTER", "INFO"])
                        .unwrap_or_default()
                        .contains("cluster_state:ok")
            })
        })
    }

    fn wait_until(&self, timeout: Duration, what: &str, ok: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the cluster did not reach: {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cli -p <port> <args>`: its standard output.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .context("redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The ports of the six nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The ports of the nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|p| !self.killed.contains(p))
            .collect()
    }

    /// A URL naming one node (clients discover the others from it).
    pub fn url(&self) -> String {
        self.nodes[0].url(0)
    }

    /// The port of the node [`Self::url`] names.
    pub fn url_port(&self) -> u16 {
        self.nodes[0].port()
    }

    /// Kill the node on `port` with SIGKILL (its replica takes over after the node timeout, 2 s,
    /// plus the election).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
            self.killed.insert(port);
        }
    }

    /// Kill every node abruptly (the whole cluster down).
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
            self.killed.insert(node.port());
        }
    }

    /// The ports of the live nodes that are primaries now.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|p| {
                self.cli(*p, &["ROLE"])
                    .is_ok_and(|role| role.starts_with("master"))
            })
            .collect()
    }

    /// `CLUSTER NODES` as the node on `port` sees the cluster.
    pub fn nodes_seen_by(&self, port: u16) -> Result<Vec<ClusterNode>> {
        let text = self.cli(port, &["CLUSTER", "NODES"])?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                bail!("unexpected CLUSTER NODES line: {line}");
            }
            let port = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("address in {line}"))?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let mut slots = Vec::new();
            for s in &fields[8..] {
                if s.starts_with('[') {
                    continue;
                }
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                slots.push((a.parse()?, b.parse()?));
            }
            out.push(ClusterNode {
                id: fields[0].to_owned(),
                port,
                primary: flags.contains(&"master"),
                failing: flags.iter().any(|f| f.starts_with("fail")),
                slots,
            });
        }
        Ok(out)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> Result<u16> {
        let port = *self.live_ports().first().context("no live node")?;
        let text = self.cli(port, &["CLUSTER", "KEYSLOT", key])?;
        text.trim()
            .parse()
            .with_context(|| format!("CLUSTER KEYSLOT answered {text:?}"))
    }

    /// The live primary serving `slot`, as the first live node sees it.
    pub fn owner_of(&self, slot: u16) -> Result<ClusterNode> {
        let port = *self.live_ports().first().context("no live node")?;
        self.nodes_seen_by(port)?
            .into_iter()
            .find(|n| {
                n.primary && !n.failing && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .with_context(|| format!("no primary serves slot {slot}"))
    }

    /// Move `slot` with its keys to the primary on `to` as `redis-cli --cluster reshard` does
    /// ([`Self::start_slot_move`], [`Self::migrate_keys`], [`Self::finish_slot_move`]).
    pub fn move_slot(&self, slot: u16, to: u16) -> Result<()> {
        let mv = self.start_slot_move(slot, to)?;
        self.migrate_keys(&mv)?;
        self.finish_slot_move(&mv)
    }

    /// Mark `slot` IMPORTING on the primary on `to` and MIGRATING on its owner: from now on the
    /// owner answers `ASK` for the slot's keys it no longer has.
    pub fn start_slot_move(&self, slot: u16, to: u16) -> Result<SlotMove> {
        let from = self.owner_of(slot)?;
        let target = self
            .nodes_seen_by(from.port)?
            .into_iter()
            .find(|n| n.port == to && n.primary)
            .context("the target is not a known primary")?;
        if from.port == to {
            bail!("slot {slot} is already on {to}");
        }
        let s = slot.to_string();
        self.ok(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from.id])?;
        self.ok(
            from.port,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id],
        )?;
        Ok(SlotMove {
            slot,
            from,
            to: target,
        })
    }

    /// `MIGRATE` every key of the slot to the target, 100 at a time.
    pub fn migrate_keys(&self, mv: &SlotMove) -> Result<()> {
        let s = mv.slot.to_string();
        let to = mv.to.port.to_string();
        loop {
            let listed = self.cli(mv.from.port, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])?;
            let keys: Vec<&str> = listed.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                return Ok(());
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            let out = self.cli(mv.from.port, &args)?;
            if !(out.starts_with("OK") || out.starts_with("NOKEY")) {
                bail!("MIGRATE: {out}");
            }
        }
    }

    /// Give the slot to the target on the target, the old owner and every other live primary.
    pub fn finish_slot_move(&self, mv: &SlotMove) -> Result<()> {
        let s = mv.slot.to_string();
        let args = ["CLUSTER", "SETSLOT", &s, "NODE", &mv.to.id];
        self.ok(mv.to.port, &args)?;
        self.ok(mv.from.port, &args)?;
        for p in self.primaries() {
            if p != mv.to.port && p != mv.from.port {
                self.ok(p, &args)?;
            }
        }
        Ok(())
    }

    fn ok(&self, port: u16, args: &[&str]) -> Result<()> {
        let out = self.cli(port, args)?;
        if !out.trim().starts_with("OK") {
            bail!("{args:?} on {port}: {out}");
        }
        Ok(())
    }
}

/// A slot being moved between primaries.
#[derive(Debug, Clone)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// Its owner when the move started.
    pub from: ClusterNode,
    /// The primary it moves to.
    pub to: ClusterNode,
}
