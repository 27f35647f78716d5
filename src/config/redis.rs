//! The Redis settings, checked once into a [`RedisTopology`]: one node
//! (`REDIS_URL`), the master Sentinel names (`REDIS_SENTINELS` +
//! `REDIS_SENTINEL_MASTER`) or a Redis Cluster (`REDIS_CLUSTER_NODES`).
//! That value is the only place the topology is decided: the store
//! connects to it and the start-up log line describes it.

use super::{ConfigError, ServeArgs};

/// `REDIS_URL` when it is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where Redis is, as the settings say. Decided once, when the settings
/// are checked ([`ServeArgs::into_config`]), from `REDIS_URL`,
/// `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER` or `REDIS_CLUSTER_NODES`,
/// at most one of which is set; the store connects to it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One node (`REDIS_URL`).
    Single {
        /// Its URL.
        url: String,
    },
    /// The master that Sentinel names (`REDIS_SENTINELS`,
    /// `REDIS_SENTINEL_MASTER`).
    Sentinel {
        /// The sentinels, as `redis://host:port` URLs.
        sentinels: Vec<String>,
        /// The master's name in the sentinels' configuration.
        master: String,
    },
    /// A Redis Cluster (`REDIS_CLUSTER_NODES`).
    Cluster {
        /// Seed nodes, as `redis://host:port` URLs.
        nodes: Vec<String>,
    },
}

impl RedisTopology {
    /// The variable that says where Redis is, for an error about it.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Single { .. } => "REDIS_URL",
            Self::Sentinel { .. } => "REDIS_SENTINELS",
            Self::Cluster { .. } => "REDIS_CLUSTER_NODES",
        }
    }

    /// Which Redis, for a log line, without passwords: the URL, the
    /// sentinels and master, or the cluster's seeds.
    pub fn for_logs(&self) -> String {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| hide_password(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Single { url } => hide_password(url),
            Self::Sentinel { sentinels, master } => {
                format!("master {master} of sentinels {}", list(sentinels))
            }
            Self::Cluster { nodes } => format!("cluster with seeds {}", list(nodes)),
        }
    }
}

impl ServeArgs {
    /// `REDIS_URL`, or its default.
    pub fn redis_url(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// `REDIS_URL` fit for a log line: any user and password replaced.
    pub fn redis_url_for_logs(&self) -> String {
        hide_password(self.redis_url())
    }

    /// Checks that at most one Redis topology is set, and each completely;
    /// turns `host:port` entries into URLs.
    pub(super) fn redis_topology(&self) -> Result<RedisTopology, ConfigError> {
        let sentinels = listed(&self.redis_sentinels);
        let nodes = listed(&self.redis_cluster_nodes);
        let set: Vec<&'static str> = [
            ("REDIS_URL", self.redis_url.is_some()),
            ("REDIS_SENTINELS", !sentinels.is_empty()),
            ("REDIS_CLUSTER_NODES", !nodes.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if let [first, second, ..] = set[..] {
            return Err(ConfigError::new(
                second,
                format!(
                    "set only one of REDIS_URL (one node), REDIS_SENTINELS (Sentinel) and \
                     REDIS_CLUSTER_NODES (Redis Cluster); here {first} and {second} are both set"
                ),
            ));
        }
        match (&self.redis_sentinel_master, sentinels.is_empty()) {
            (None, false) => Err(ConfigError::new(
                "REDIS_SENTINEL_MASTER",
                "required with REDIS_SENTINELS: the master's name in the sentinels' \
                 configuration (as in `sentinel monitor <name> ...`)",
            )),
            (Some(_), true) => Err(ConfigError::new(
                "REDIS_SENTINELS",
                "required with REDIS_SENTINEL_MASTER: the sentinels, as host:port,host:port",
            )),
            (Some(name), false) if name.trim().is_empty() => Err(ConfigError::new(
                "REDIS_SENTINEL_MASTER",
                "must not be empty with REDIS_SENTINELS",
            )),
            (Some(master), false) => Ok(RedisTopology::Sentinel {
                sentinels: node_urls("REDIS_SENTINELS", &sentinels)?,
                master: master.clone(),
            }),
            (None, true) if !nodes.is_empty() => Ok(RedisTopology::Cluster {
                nodes: node_urls("REDIS_CLUSTER_NODES", &nodes)?,
            }),
            (None, true) => {
                let url = self.redis_url();
                if let Err(e) = ::redis::IntoConnectionInfo::into_connection_info(url) {
                    return Err(ConfigError::new(
                        "REDIS_URL",
                        format!("expected a URL like redis://127.0.0.1:6379 ({e})"),
                    ));
                }
                Ok(RedisTopology::Single {
                    url: url.to_owned(),
                })
            }
        }
    }
}

/// The entries of a comma-separated list that are not blank.
fn listed(list: &[String]) -> Vec<&str> {
    list.iter()
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .collect()
}

/// Every entry of `variable` as a URL ([`node_url`]), or the error naming
/// the first that is not one.
fn node_urls(variable: &'static str, entries: &[&str]) -> Result<Vec<String>, ConfigError> {
    entries
        .iter()
        .map(|entry| {
            node_url(entry).ok_or_else(|| {
                ConfigError::new(
                    variable,
                    format!("`{entry}` is not host:port (like 127.0.0.1:26379) or a redis:// URL"),
                )
            })
        })
        .collect()
}

/// A URL fit for a log line: any user and password replaced.
fn hide_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_credentials, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `host:port` as `redis://host:port`; a `redis://` or `rediss://` URL as
/// it is; `None` for anything else.
fn node_url(entry: &str) -> Option<String> {
    let entry = entry.trim();
    let url = if entry.contains("://") {
        entry.to_owned()
    } else {
        let (host, port) = entry.rsplit_once(':')?;
        port.parse::<u16>().ok().filter(|p| *p > 0)?;
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return None;
        }
        format!("redis://{entry}")
    };
    ::redis::IntoConnectionInfo::into_connection_info(url.as_str()).ok()?;
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::serve;

    /// The start-up log line's description of Redis.
    fn for_logs(cfg: &Config) -> String {
        cfg.redis
            .as_ref()
            .map(RedisTopology::for_logs)
            .unwrap_or_default()
    }

    #[test]
    fn a_bad_redis_url_names_the_variable() {
        let err = serve(&["--store", "redis", "--redis-url", "http://x"]).unwrap_err();
        assert!(err.starts_with("REDIS_URL:"), "{err}");
        let err = serve(&["--redis-key-prefix", "a{b}"]).unwrap_err();
        assert!(err.starts_with("REDIS_KEY_PREFIX"), "{err}");
    }

    #[test]
    fn the_redis_password_never_reaches_a_log_line() {
        let cfg = serve(&["--redis-url", "redis://user:hunter2@cache:6380/2"]).unwrap();
        assert_eq!(cfg.args.redis_url_for_logs(), "redis://***@cache:6380/2");
        let cfg = serve(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(cfg.args.redis_url_for_logs(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn one_redis_topology_at_a_time_each_complete() {
        let redis = |more: &[&str]| {
            let mut args = vec!["--store", "redis", "--jwt-secret", "s"];
            args.extend_from_slice(more);
            serve(&args)
        };
        let err = redis(&["--redis-url", "redis://a:1", "--redis-sentinels", "b:2"]).unwrap_err();
        assert!(err.starts_with("REDIS_SENTINELS:"), "{err}");
        assert!(err.contains("REDIS_URL and REDIS_SENTINELS"), "{err}");
        let err = redis(&["--redis-sentinels", "b:2", "--redis-cluster-nodes", "c:3"]).unwrap_err();
        assert!(err.starts_with("REDIS_CLUSTER_NODES:"), "{err}");
        let err = redis(&["--redis-sentinels", "b:2"]).unwrap_err();
        assert!(err.starts_with("REDIS_SENTINEL_MASTER:"), "{err}");
        let err = redis(&["--redis-sentinel-master", "m"]).unwrap_err();
        assert!(err.starts_with("REDIS_SENTINELS:"), "{err}");
        let err = redis(&["--redis-cluster-nodes", "c"]).unwrap_err();
        assert!(err.starts_with("REDIS_CLUSTER_NODES:"), "{err}");
        let err = redis(&["--redis-shards", "0"]).unwrap_err();
        assert!(err.starts_with("REDIS_SHARDS"), "{err}");
        let cfg = redis(&[
            "--redis-sentinels",
            "b:2,c:3",
            "--redis-sentinel-master",
            "m",
        ])
        .unwrap();
        let Some(RedisTopology::Sentinel { sentinels, .. }) = &cfg.redis else {
            panic!("not Sentinel: {:?}", cfg.redis);
        };
        assert_eq!(sentinels, &["redis://b:2", "redis://c:3"]);
        assert_eq!(
            for_logs(&cfg),
            "master m of sentinels redis://b:2,redis://c:3"
        );
        let cfg = redis(&["--redis-cluster-nodes", "c:3,redis://:pw@d:4"]).unwrap();
        assert_eq!(
            for_logs(&cfg),
            "cluster with seeds redis://c:3,redis://***@d:4"
        );
        let cfg = redis(&[]).unwrap();
        assert_eq!(for_logs(&cfg), "redis://127.0.0.1:6379");
    }

    #[test]
    fn the_memory_store_has_no_redis_topology() {
        let cfg = serve(&["--redis-sentinels", "b:2"]).unwrap();
        assert_eq!(cfg.redis, None);
    }
}
