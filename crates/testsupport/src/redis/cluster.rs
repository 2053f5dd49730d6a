//! A throw-away Redis Cluster of three primaries (no replicas), run from the local
//! `redis-server` binary: what leadline's cache, rate limits and sessions are tested against
//! when `cache.redis_cluster` is set.
//!
//! Each node is an ordinary [`local::Instance`] started with `--cluster-enabled yes` and a
//! cluster bus port of its own (free-port probed like the client port, not `port + 10000`,
//! which another test's server may hold). The 16384 slots are split evenly with
//! `CLUSTER ADDSLOTSRANGE`, the nodes are introduced with `CLUSTER MEET`, and [`start`] returns
//! once every node reports `cluster_state:ok` and knows all three: a client's first slot map
//! is then complete. Docker is not used: a cluster's nodes announce addresses that must be
//! reachable from the test, which a local process gives for free.
//!
//! [`start`]: RedisCluster::start

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{NO_REDIS, client, local};
use crate::util;

/// How long the nodes get to agree on a complete slot map.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-call bound on the setup connections.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The slot ranges of the three primaries.
const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// Three cluster nodes owned by one test; stopped and removed on `Drop`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<local::Instance>,
}

impl RedisCluster {
    /// Starts three nodes, assigns the slots, joins them and waits until the cluster is ok.
    ///
    /// Blocking (well under a second on an idle machine); call it from `block_in_place` or
    /// `spawn_blocking` in async tests.
    ///
    /// # Errors
    ///
    /// Without a local `redis-server` (the message says how to get one), or if the nodes do
    /// not form a cluster within 30 s (with each node's `CLUSTER INFO`).
    pub fn start() -> anyhow::Result<Self> {
        let binary = local::find_binary().map_err(|why| {
            anyhow::anyhow!("{NO_REDIS}\n  (a cluster needs a local redis-server: {why})")
        })?;
        let mut nodes = Vec::with_capacity(RANGES.len());
        for _ in RANGES {
            let bus_port = util::free_port()?;
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port.to_string(),
                "--cluster-node-timeout",
                "2000",
                // Relative to --dir: each node's own file.
                "--cluster-config-file",
                "nodes.conf",
            ]
            .map(str::to_owned)
            .to_vec();
            nodes.push((local::Instance::start_new_with(&binary, args)?, bus_port));
        }
        for ((node, _), (first, last)) in nodes.iter().zip(RANGES) {
            let mut connection = client::connect(&node.server().url(), CALL_TIMEOUT)?;
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query::<()>(&mut connection)
                .context("CLUSTER ADDSLOTSRANGE")?;
        }
        let mut first = client::connect(&nodes[0].0.server().url(), CALL_TIMEOUT)?;
        for (node, bus_port) in &nodes[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.server().port())
                .arg(*bus_port)
                .query::<()>(&mut first)
                .context("CLUSTER MEET")?;
        }
        let cluster = Self {
            nodes: nodes.into_iter().map(|(node, _)| node).collect(),
        };
        cluster.wait_until_formed()?;
        Ok(cluster)
    }

    fn wait_until_formed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|node| {
                    let mut connection = client::connect(&node.server().url(), CALL_TIMEOUT)?;
                    Ok(redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut connection)?)
                })
                .collect::<anyhow::Result<_>>()?;
            let formed = infos.iter().all(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
            if formed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the Redis Cluster did not form within {FORM_TIMEOUT:?}:\n{}",
                    infos.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's URL, comma-separated: what `cache.redis_url` takes with
    /// `cache.redis_cluster = true`.
    #[must_use]
    pub fn urls(&self) -> String {
        self.node_urls().join(",")
    }

    /// Each node's `redis://127.0.0.1:PORT`, in slot order (the first holds slots 0–5460).
    #[must_use]
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.server().url()).collect()
    }

    /// Stops node `index` (`SIGTERM`); its slots become unreachable until it restarts.
    ///
    /// # Errors
    ///
    /// If it did not stop in time.
    pub fn stop_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes.get_mut(index).context("no such node")?.stop()
    }

    /// Starts node `index` again on its ports; it rejoins from its `nodes.conf`, and this
    /// returns once the cluster is ok again. Its data is gone (nothing is persisted).
    ///
    /// # Errors
    ///
    /// If it does not start, or the cluster does not become ok within 30 s.
    pub fn restart_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes.get_mut(index).context("no such node")?.start()?;
        self.wait_until_formed()
    }
}
