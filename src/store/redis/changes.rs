//! The Redis store's change feed: every instance's presence streams hear of
//! a change made on any instance.
//!
//! The heartbeat, leave and sweep scripts `PUBLISH` each resource whose
//! viewers they changed on `{prefix}:presence` (one channel per shard,
//! `{prefix:n}:presence`). [`run`] subscribes to them on one pub/sub
//! connection and marks the resource in the local [`Watchers`]. Pub/sub
//! delivers at most once: whenever the subscription is (re)made, every
//! watched resource is marked as changed, so a stream that missed messages
//! during an outage re-reads its viewers as soon as Redis is back.
//!
//! On Redis Cluster a `PUBLISH` reaches every node, so one connection to
//! any seed node hears them all (classic pub/sub, not sharded).

use std::time::Duration;

use futures_util::StreamExt as _;
use redis::sentinel::{SentinelClient, SentinelServerType};
use tokio_util::sync::CancellationToken;

use super::{RedisStore, Topology};
use crate::domain::ResourceId;

/// How long to wait before subscribing again after the connection is lost.
const RETRY: Duration = Duration::from_secs(1);

/// Feeds changes published by any instance into `store`'s watchers until
/// `cancel` fires.
pub async fn run(store: RedisStore, cancel: CancellationToken) {
    let channels: Vec<String> = store
        .shards
        .iter()
        .map(|s| format!("{}:presence", s.tag))
        .collect();
    let mut seed = 0_usize;
    loop {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = listen(&store, &channels, seed) => outcome,
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "presence change feed lost; subscribing again");
        }
        seed = seed.wrapping_add(1);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One subscription, until the connection ends.
async fn listen(
    store: &RedisStore,
    channels: &[String],
    seed: usize,
) -> Result<(), redis::RedisError> {
    let client = client(&store.config.topology, seed).await?;
    let mut pubsub = tokio::time::timeout(super::REDIS_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| timeout())??;
    for channel in channels {
        pubsub.subscribe(channel).await?;
    }
    // Messages may have been lost while not subscribed.
    store.watchers.touch_all();
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            continue;
        };
        if let Some(resource) = ResourceId::parse(payload) {
            store.watchers.touch(&resource);
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "subscription ended",
    )))
}

fn timeout() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection timed out"))
}

/// A plain client for the node to subscribe on: the single node, the
/// master Sentinel names now, or the `seed`-th cluster seed node.
async fn client(topology: &Topology, seed: usize) -> Result<redis::Client, redis::RedisError> {
    match topology {
        Topology::Single { url } => redis::Client::open(url.as_str()),
        Topology::Sentinel { sentinels, master } => {
            let mut sentinel = SentinelClient::build(
                sentinels.iter().map(String::as_str).collect(),
                master.clone(),
                None,
                SentinelServerType::Master,
            )?;
            sentinel.async_get_client().await
        }
        Topology::Cluster { nodes } => {
            let node = nodes.get(seed % nodes.len().max(1)).ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "no cluster node"))
            })?;
            redis::Client::open(node.as_str())
        }
    }
}
