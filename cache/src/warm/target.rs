//! Where a warm job writes: the cache's Redis (one node, or a Redis Cluster when the cache's
//! `cluster` setting says so) and the job's own keys there.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClientBuilder;

use crate::config::CacheConfig;
use crate::key_template::escape;
use crate::L2Conn;

/// Connect to the Redis `client` names: that node, or (`cluster`) the Redis Cluster it belongs
/// to (the other nodes are discovered from it).
pub async fn connect(
    client: &redis::Client,
    cluster: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> redis::RedisResult<L2Conn> {
    if cluster {
        let cluster = ClusterClientBuilder::new(vec![client.get_connection_info().clone()])
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .build()?;
        return cluster.get_async_connection().await.map(L2Conn::Cluster);
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    client
        .get_connection_manager_with_config(config)
        .await
        .map(L2Conn::Single)
}

/// The run lock and the saved state of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKeys {
    /// `<prefix>warm:<job>:lock`.
    pub lock: String,
    /// `<prefix>warm:<job>:state`.
    pub state: String,
}

impl JobKeys {
    /// The keys of job `job` in the cache laid out by `config`. On a cluster the job's name is
    /// a hash tag (`<prefix>warm:{<job>}:lock`, braces and `:` in the name escaped as in cache
    /// keys), so the state save, which checks the lock, touches one slot.
    pub fn new(config: &CacheConfig, job: &str) -> JobKeys {
        let name = if config.cluster {
            format!("{{{}}}", escape(job))
        } else {
            job.to_owned()
        };
        JobKeys {
            lock: format!("{}warm:{name}:lock", config.prefix),
            state: format!("{}warm:{name}:state", config.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_keys_are_unchanged_and_cluster_keys_share_a_tag() {
        let mut config = CacheConfig {
            prefix: "p:".into(),
            ..CacheConfig::default()
        };
        let keys = JobKeys::new(&config, "q.get");
        assert_eq!(
            (keys.lock.as_str(), keys.state.as_str()),
            ("p:warm:q.get:lock", "p:warm:q.get:state")
        );
        config.cluster = true;
        let keys = JobKeys::new(&config, "q.get");
        assert_eq!(keys.lock, "p:warm:{q.get}:lock");
        assert_eq!(keys.state, "p:warm:{q.get}:state");
        let keys = JobKeys::new(&config, "}a{b:c");
        assert_eq!(keys.lock, "p:warm:{%7Da%7Bb%3Ac}:lock");
        let slot = redis::cluster_routing::Slot::for_key;
        assert_eq!(slot(&keys.lock), slot(&keys.state));
    }
}
