//! Reading the scripts' replies: the store's types from Redis values.
//!
//! The scripts answer in flat arrays of integers and strings (Lua has no
//! richer reply), so each read walks one with these helpers. A reply that
//! does not have the expected shape is a [`StoreError::Backend`] saying
//! so ([`malformed`]); a Redis error becomes an outage or a backend error
//! ([`store_error`]).

use std::sync::atomic::{AtomicU64, Ordering};

use redis::Value;
use serde::Deserialize;

use crate::clock::Millis;
use crate::domain::{Activity, ClientId, Modules, Profile};
use crate::store::StoreError;
use crate::store::history::{MinuteBucket, ModuleMinute};

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(store_error)"
)]
pub(super) fn store_error(e: redis::RedisError) -> StoreError {
    // A full Redis (`maxmemory` reached under `noeviction`, which it must
    // run with) refuses writes with OOM: an outage to wait out, not a bug.
    let full = e.code() == Some("OOM");
    // A fail-over under way: a demoted master, a cluster without a master
    // for a slot yet, a replica still loading.
    let failing_over = matches!(
        e.code(),
        Some("READONLY" | "MASTERDOWN" | "LOADING" | "CLUSTERDOWN" | "TRYAGAIN")
    ) || e.is_cluster_error();
    // A key holding another type than the scripts write (a hand edit,
    // another program under REDIS_KEY_PREFIX): no request can succeed on
    // it until it is removed, so an outage (503), said loudly, not a 500.
    if e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE") {
        wrong_type_seen(&e);
        return StoreError::Unavailable(format!(
            "a key under REDIS_KEY_PREFIX holds another type than the store writes: {e}"
        ));
    }
    if full
        || failing_over
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Logs a WRONGTYPE reply at error, at most once a minute: every request
/// meets it, the log must not.
fn wrong_type_seen(e: &redis::RedisError) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(
            error = %e,
            "a Redis key under REDIS_KEY_PREFIX holds another type than the store writes (a hand \
             edit, or another program using the prefix); requests that need it answer 503 until \
             it is deleted"
        );
    }
}

/// A session's field in its user's hash: the client id, `""` for the
/// default session.
pub(super) fn field(client: Option<&ClientId>) -> &str {
    client.map_or("", ClientId::as_str)
}

/// A session as the scripts store it.
#[derive(Deserialize)]
pub(super) struct Packed {
    pub(super) m: String,
    pub(super) st: f64,
    pub(super) ls: f64,
    pub(super) p: String,
    pub(super) r: String,
    /// 1 when idle; absent when active (and in values written before).
    #[serde(default)]
    pub(super) i: Option<f64>,
}

/// A session's state as the scripts store it: `i` is 1 when idle.
pub(super) fn activity(idle: bool) -> Activity {
    if idle {
        Activity::Idle
    } else {
        Activity::Active
    }
}

/// A profile as the scripts return it: JSON text, `""` for none, with
/// only `claims` (the current `PROFILE_CLAIMS`). What does not pass
/// [`Profile::from_json_within`] (a hand edit) is no profile.
pub(super) fn profile(v: Value, claims: &[String]) -> Result<Option<Profile>, StoreError> {
    let text = text(v)?;
    Ok(if text.is_empty() {
        None
    } else {
        Profile::from_json_within(&text, claims)
    })
}

/// Lua numbers are doubles; ours are whole milliseconds.
#[allow(clippy::cast_possible_truncation, reason = "whole ms, far below 2^53")]
pub(super) fn ms(x: f64) -> Millis {
    x as Millis
}

pub(super) fn malformed(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected reply from Redis: {what}"))
}

pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(malformed("expected an integer")),
    }
}

/// The next integer of a reply walked by `it`; `what` says which reply
/// ended early.
pub(super) fn next_int(
    it: &mut impl Iterator<Item = Value>,
    what: &str,
) -> Result<i64, StoreError> {
    int(&it.next().ok_or_else(|| malformed(what))?)
}

pub(super) fn text(v: Value) -> Result<String, StoreError> {
    redis::from_redis_value(v).map_err(|_| malformed("expected a string"))
}

/// One shard's minutes of history, by minute start.
pub(super) fn parse_history(
    flat: Vec<Value>,
    modules: &Modules,
) -> Result<(Millis, Vec<MinuteBucket>), StoreError> {
    let mut it = flat.into_iter();
    let at = next_int(&mut it, "empty history")?;
    let mut buckets = Vec::new();
    while let (Some(start), Some(fields)) = (it.next(), it.next()) {
        let mut bucket = MinuteBucket {
            start: int(&start)?,
            modules: vec![ModuleMinute::default(); modules.len()],
        };
        for _ in 0..int(&fields)? / 2 {
            let (Some(name), Some(value)) = (it.next(), it.next()) else {
                return Err(malformed("history fields"));
            };
            let (name, value) = (text(name)?, text(value)?);
            let Some((code, field)) = name.rsplit_once(':') else {
                continue;
            };
            let Some(id) = modules.by_code(code) else {
                continue; // a module no longer in the registry
            };
            // A value the scripts did not write (a hand edit) is ignored:
            // not a count, or a peak outside its own minute.
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            let minute = &mut bucket.modules[id.index()];
            match field {
                "s" => minute.sample = Some(n),
                "p" => minute.peak = n,
                "pa" => {
                    minute.peak_at = Millis::try_from(n)
                        .ok()
                        .filter(|at| (bucket.start..bucket.start + 60_000).contains(at));
                }
                "st" => minute.started = n,
                "e" => minute.ended = n,
                "ems" => minute.ended_ms = n,
                _ => {}
            }
        }
        buckets.push(bucket);
    }
    Ok((at, buckets))
}
