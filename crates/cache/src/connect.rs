//! Where Redis is and how leadline talks to it: one server, or a Redis
//! Cluster reached through seed nodes (`cache.redis_cluster`).
//!
//! [`Connection`] hides the difference from the rest of the crate: both
//! variants reconnect in the background (creating one never waits on
//! Redis), are multiplexed (clones share one socket per node) and bound each
//! call by `cache.redis_timeout_ms`. In a cluster every command goes to the
//! node owning its key's slot, which is why every key that a command,
//! transaction or script uses together carries the same `{tenant}` hash tag
//! (see [`crate::keys`]). The few fleet-wide operations say what they do in
//! a cluster: a sweep scans each primary ([`Connection::primaries`]), and
//! pub/sub messages cross the cluster bus, so a subscriber needs only one
//! node ([`Target::subscription_clients`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, FromRedisValue, RedisFuture, RedisResult, Value};

use crate::{CacheError, CacheSettings};

/// The Redis that `cache.redis_url` names.
#[derive(Clone)]
pub(crate) enum Target {
    Single(Client),
    /// The seed nodes, each a client of its own for pub/sub.
    Cluster(Vec<Client>),
}

impl Target {
    /// The Redis `settings` name; `None` without `cache.redis_url`.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] for a URL the client refuses. The
    /// client's own message is dropped: it may quote the URL.
    pub(crate) fn from_settings(settings: &CacheSettings) -> Result<Option<Self>, CacheError> {
        let Some(url) = settings.redis_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad_url = || {
            CacheError::InvalidSettings(vec![(
                "cache.redis_url",
                "is not a valid Redis URL".to_owned(),
            )])
        };
        if !settings.redis_cluster {
            return Client::open(url)
                .map(|c| Some(Self::Single(c)))
                .map_err(|_| bad_url());
        }
        crate::settings::split_nodes(url)
            .into_iter()
            .map(|seed| Client::open(seed).map_err(|_| bad_url()))
            .collect::<Result<Vec<_>, _>>()
            .map(|seeds| Some(Self::Cluster(seeds)))
    }

    /// A connection that connects in the background; `connect_timeout`
    /// bounds each attempt, `response_timeout` each call.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] when the client cannot be set up.
    pub(crate) fn connection(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Connection, CacheError> {
        let cannot = |error: redis::RedisError| {
            CacheError::InvalidSettings(vec![(
                "cache.redis_url",
                format!("cannot set up a client: {:?}", error.kind()),
            )])
        };
        match self {
            Self::Single(client) => {
                // Retries are few and capped: after the last one fails, the
                // next call starts a new round, so giving up early costs
                // nothing while retrying for long would only delay noticing
                // a recovery.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1))
                    .set_number_of_retries(4);
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(Connection::Single)
                    .map_err(cannot)
            }
            Self::Cluster(seeds) => {
                let nodes: Vec<_> = seeds
                    .iter()
                    .map(|seed| seed.get_connection_info().clone())
                    .collect();
                // The cluster client follows MOVED/ASK redirections and
                // refreshes its slot map by itself; its retries are for
                // those, and like the single server's, few.
                let client = ClusterClient::builder(nodes)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .build()
                    .map_err(cannot)?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Connection::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// The servers a pub/sub subscription may be made on, to be tried in
    /// turn: the one server, or every seed node. A cluster forwards each
    /// `PUBLISH` to every node, so a subscriber on any of them hears every
    /// instance.
    pub(crate) fn subscription_clients(&self) -> Vec<Client> {
        match self {
            Self::Single(client) => vec![client.clone()],
            Self::Cluster(seeds) => seeds.clone(),
        }
    }
}

/// A lazily connecting, auto-reconnecting connection to the one server or
/// to the cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A primary node of a cluster, by the address the cluster announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Connection {
    /// The connection for `settings`' Redis, with the same bound on
    /// connecting and on each call; `None` without `cache.redis_url`.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] for a URL the client refuses.
    pub(crate) fn from_settings(
        settings: &CacheSettings,
        timeout: Duration,
    ) -> Result<Option<Self>, CacheError> {
        Target::from_settings(settings)?
            .map(|target| target.connection(timeout.max(Duration::from_secs(1)), timeout))
            .transpose()
    }

    /// Every primary of the cluster; `[None]` (the one server) when not a
    /// cluster. What a keyspace-wide `SCAN` must visit.
    ///
    /// # Errors
    /// As the `CLUSTER SHARDS` call fails.
    pub(crate) async fn primaries(&mut self) -> RedisResult<Vec<Option<Node>>> {
        let Self::Cluster(cluster) = self else {
            return Ok(vec![None]);
        };
        let mut command = redis::cmd("CLUSTER");
        command.arg("NODES");
        let reply = cluster
            .route_command(
                command,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let text: String = FromRedisValue::from_redis_value(reply)?;
        Ok(parse_primaries(&text).into_iter().map(Some).collect())
    }

    /// `command` on `node` (a primary from [`Connection::primaries`]), or on
    /// the one server.
    ///
    /// # Errors
    /// As the call fails or its answer is not a `T`.
    pub(crate) async fn query_on<T: FromRedisValue>(
        &mut self,
        node: Option<&Node>,
        command: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(cluster), Some(node)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                let reply = cluster.route_command(command, routing).await?;
                Ok(FromRedisValue::from_redis_value(reply)?)
            }
            (connection, _) => command.query_async(connection).await,
        }
    }
}

/// The primaries in a `CLUSTER NODES` answer that are not marked failed:
/// `<id> <ip:port@cport[,hostname]> <flags> …`, one node per line.
fn parse_primaries(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(Node {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_read_from_cluster_nodes_and_failed_ones_skipped() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,node-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 disconnected 10923-16383
e7d1 10.0.0.7:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            parse_primaries(nodes),
            [
                Node {
                    host: "127.0.0.1".to_owned(),
                    port: 30002
                },
                Node {
                    host: "10.0.0.7".to_owned(),
                    port: 30001
                },
            ]
        );
        assert!(parse_primaries("garbage\n\n").is_empty());
    }
}
