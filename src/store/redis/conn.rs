//! The connection to Redis in each of its three topologies, behind one
//! type that the store and the scripts use alike.
//!
//! - One node (`REDIS_URL`): a `ConnectionManager`, multiplexed and
//!   reconnecting by itself.
//! - Sentinel (`REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`): a multiplexed
//!   connection to the master the sentinels name. An error that says the
//!   master is gone or no longer a master (I/O, timeout, `READONLY`,
//!   `MASTERDOWN`) forgets it, and the next call asks the sentinels again,
//!   so a fail-over is followed without a restart.
//! - Cluster (`REDIS_CLUSTER_NODES`): redis-rs's cluster client, which
//!   routes each call to the master of its slot and follows `MOVED`, `ASK`
//!   and fail-overs; `SCRIPT LOAD` (after a `NOSCRIPT`) goes to every master.
//!
//! None of them waits for Redis when built: the first calls connect, so the
//! service starts (and `/readyz` says 503) while Redis is still down.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use super::REDIS_TIMEOUT;

/// Where Redis is: the settings' [`crate::config::RedisTopology`], decided
/// once when they are checked; the store connects to it as it is.
pub use crate::config::RedisTopology as Topology;

/// A connection to Redis in any topology. Cheap to clone: clones share it.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelMaster>),
    Cluster(Arc<LazyCluster>),
}

impl Conn {
    /// A connection to `topology`, made at the first call.
    ///
    /// # Errors
    /// An address that cannot be parsed.
    pub(crate) fn new(topology: &Topology) -> Result<Self, RedisError> {
        Ok(match topology {
            Topology::Single { url } => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Self::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Topology::Sentinel { sentinels, master } => {
                let client = SentinelClient::build(
                    sentinels.iter().map(String::as_str).collect(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                Self::Sentinel(Arc::new(SentinelMaster {
                    sentinels: tokio::sync::Mutex::new(client),
                    master: Mutex::new(Found::default()),
                }))
            }
            Topology::Cluster { nodes } => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(300)
                    .build()?;
                Self::Cluster(Arc::new(LazyCluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                }))
            }
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(master) => Box::pin(async move {
                let (generation, mut conn) = master.connection().await?;
                let reply = conn.req_packed_command(cmd).await;
                master.check(generation, reply)
            }),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.connection().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(master) => Box::pin(async move {
                let (generation, mut conn) = master.connection().await?;
                let reply = conn.req_packed_commands(pipeline, offset, count).await;
                master.check(generation, reply)
            }),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.connection().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// After a failed look-up, calls fail at once for this long instead of
/// each asking the sentinels again: during a fail-over every request
/// answers 503 quickly and the sentinels see a few questions a second.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(100);

/// The master as last found, with a generation so that an error on an old
/// connection never forgets a newer one.
#[derive(Default)]
struct Found {
    conn: Option<MultiplexedConnection>,
    generation: u64,
    failed_at: Option<Instant>,
}

/// The master the sentinels name, found again after it fails.
pub(crate) struct SentinelMaster {
    /// Held only while asking the sentinels (a tokio mutex: across
    /// `.await`), so concurrent calls after a fail-over ask once.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// A std mutex, never held across `.await`: a clone of the connection
    /// is all a call takes.
    master: Mutex<Found>,
}

impl SentinelMaster {
    fn found(&self) -> std::sync::MutexGuard<'_, Found> {
        self.master.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current master's connection, asking the sentinels when there is
    /// none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(conn) = self.cached()? {
            return Ok(conn);
        }
        let mut sentinels = self.sentinels.lock().await;
        if let Some(conn) = self.cached()? {
            return Ok(conn); // found by the call that held the lock before
        }
        let lookup = async {
            let client = sentinels.async_get_client().await?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT));
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        let result = match tokio::time::timeout(REDIS_TIMEOUT * 2, lookup).await {
            Ok(result) => result
                .map_err(|e| unreachable_because("cannot reach the master Sentinel names", &e)),
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "no answer from the sentinels or the master they name",
            ))),
        };
        let mut found = self.found();
        match result {
            Ok(conn) => {
                found.generation += 1;
                found.conn = Some(conn.clone());
                found.failed_at = None;
                Ok((found.generation, conn))
            }
            Err(e) => {
                found.failed_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// The cached connection; an error while a recent look-up failed.
    fn cached(&self) -> Result<Option<(u64, MultiplexedConnection)>, RedisError> {
        let found = self.found();
        if let Some(conn) = &found.conn {
            return Ok(Some((found.generation, conn.clone())));
        }
        match found.failed_at {
            Some(at) if at.elapsed() < LOOKUP_BACKOFF => Err(RedisError::from((
                ErrorKind::Io,
                "the Redis master is unknown (Sentinel fail-over?)",
            ))),
            _ => Ok(None),
        }
    }

    /// Passes `reply` on, forgetting the master first when the error says
    /// it is gone or no longer the master.
    fn check<T>(&self, generation: u64, reply: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &reply {
            let demoted = matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if demoted || e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                let mut found = self.found();
                if found.generation == generation {
                    found.conn = None;
                }
            }
        }
        reply
    }
}

/// A cluster connection, made at the first call (and again while making it
/// fails); once made, redis-rs keeps it following the cluster.
pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        self.conn
            .get_or_try_init(|| async {
                match tokio::time::timeout(REDIS_TIMEOUT * 2, self.client.get_async_connection())
                    .await
                {
                    Ok(result) => {
                        result.map_err(|e| unreachable_because("cannot reach the cluster", &e))
                    }
                    Err(_) => Err(RedisError::from((
                        ErrorKind::Io,
                        "no answer from the cluster's seed nodes",
                    ))),
                }
            })
            .await
            .cloned()
    }
}

/// An I/O error (a 503, as any outage) saying why Redis cannot be reached,
/// whatever kind of error the look-up returned.
fn unreachable_because(what: &'static str, e: &RedisError) -> RedisError {
    RedisError::from((ErrorKind::Io, what, e.to_string()))
}
