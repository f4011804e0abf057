//! A private Redis Cluster: 3 primaries and 3 replicas started from `redis-server` on free
//! ports, joined with `redis-cli --cluster create`, killed when dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, RedisServer};

/// Three primaries (slots split evenly) and one replica of each.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start six nodes and wait until every node reports `cluster_state:ok`.
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
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Wait until every live node says `cluster_state:ok` and knows all six nodes.
    pub fn wait_ok(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = self.cli(n.port(), &["CLUSTER", "INFO"]).unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the cluster did not reach cluster_state:ok");
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

    /// A URL naming one node (clients discover the others from it).
    pub fn url(&self) -> String {
        self.nodes[0].url(0)
    }

    /// Kill the node on `port` abruptly (its replica takes over after the node timeout, 2 s).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Kill every node abruptly (the whole cluster down).
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// The ports of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|p| {
                self.cli(*p, &["ROLE"])
                    .is_ok_and(|role| role.starts_with("master"))
            })
            .collect()
    }
}
