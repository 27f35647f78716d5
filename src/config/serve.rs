//! [`ServeArgs`]: the settings of `presence serve`, each a flag and an
//! environment variable, and the small values they hold: which store
//! ([`StoreKind`]), the log format ([`LogFormat`]) and the per-user rate
//! limit ([`RateLimit`]). Checking them together is
//! [`ServeArgs::into_config`]'s work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use clap::{Args, ValueEnum};

use super::jwt::{JwtArgs, Visibility};
use super::parse::{MAX_DURATION, parse_duration, parse_key_prefix, parse_timezone};
use super::state_file::parse_state_file;
use super::webhooks::WebhookArgs;
use crate::domain::Modules;

/// Settings of `presence serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Demo mode on purpose: with no JWT_SECRET or JWT_PUBLIC_KEY_FILE,
    /// serve with a random key on any address and store. Without it, a
    /// missing key is a configuration error unless LISTEN_ADDR is a
    /// loopback address and STORE=memory.
    #[arg(long, env = "DEMO", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Token checks.
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Cadence suggested to clients (`nextHeartbeatMs`); must be under
    /// SESSION_TTL [default: 45s, or SESSION_TTL/3 when that is shorter].
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,

    /// A session without a heartbeat for this long is gone.
    #[arg(long, env = "SESSION_TTL", default_value = "5m", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How often expired sessions are removed from memory; counts never
    /// depend on it [default: 1m, or SESSION_TTL when that is shorter].
    #[arg(long, env = "SWEEP_INTERVAL", value_parser = parse_duration)]
    pub sweep_interval: Option<Duration>,

    /// The module registry, as code:statsKey pairs.
    #[arg(long, env = "MODULES", default_value = "pms:procurement,ih:innovation", value_parser = Modules::parse)]
    pub modules: Modules,

    /// IANA time zone where "today" starts.
    #[arg(long, env = "STATS_TIMEZONE", default_value = "UTC", value_parser = parse_timezone)]
    pub stats_timezone: Tz,

    /// Where sessions are kept.
    #[arg(long, env = "STORE", value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,

    /// One Redis node to use with STORE=redis [default:
    /// redis://127.0.0.1:6379]; set at most one of REDIS_URL,
    /// REDIS_SENTINELS and REDIS_CLUSTER_NODES.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis Sentinels (comma-separated host:port) that name the master
    /// to use, followed through fail-overs; with REDIS_SENTINEL_MASTER.
    #[arg(long, env = "REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The master's name in the sentinels' configuration.
    #[arg(long, env = "REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// Seed nodes (comma-separated host:port) of a Redis Cluster to use.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Partitions users are hashed into in Redis, each its own hash tag
    /// (so a Redis Cluster spreads them over its masters). Recorded in
    /// Redis: every instance of a deployment must use the same count.
    #[arg(long, env = "REDIS_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub redis_shards: u16,

    /// Prefix (and hash tag) of every Redis key, so several deployments can
    /// share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "presence", value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// Memory store: a snapshot kept across restarts, written every minute
    /// and at shutdown, read at start-up [default: none, nothing is kept].
    #[arg(long, env = "STATE_FILE", value_parser = parse_state_file)]
    pub state_file: Option<PathBuf>,

    /// Comma-separated origins allowed by CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Per-user heartbeat rate limit: burst, then one more per period.
    #[arg(long, env = "RATE_LIMIT", default_value = "20,2s", value_parser = RateLimit::parse)]
    pub rate_limit: RateLimit,

    /// Most live sessions (tabs, devices) one user may hold.
    #[arg(long, env = "MAX_SESSIONS_PER_USER", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_sessions_per_user: u16,

    /// Most open SSE streams one user may hold.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_streams_per_user: u16,

    /// Most open SSE streams on this instance.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams: u32,

    /// MiB of verified tokens remembered by their exact bytes until they
    /// expire, so a token sent with every heartbeat is checked in full
    /// once; 0 checks every time.
    #[arg(long, env = "TOKEN_CACHE_MB", default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub token_cache_mb: u32,

    /// Most TCP connections served at once; past it, new ones wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Most requests handled at once; past it, requests are answered 503
    /// `overloaded` with `Retry-After` instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,

    /// Longest a request may take, from its headers to its response's
    /// headers (a slow body included); past it, 408 `request_timeout`.
    /// Also the longest a connection's writes may make no progress (a
    /// client that stops reading); past it, the connection is closed.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Longest a connection may take to send a request's headers, counted
    /// from when it opens or its previous response ends; past it, the
    /// connection is closed. This also closes idle keep-alive connections.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Who may read viewers and user status: `users` (any authenticated
    /// user), `scoped` (non-admins only resources their JWT_SCOPE_CLAIM
    /// matches) or `admins`.
    #[arg(long, env = "PRESENCE_VISIBILITY", value_enum, default_value_t = Visibility::Users)]
    pub presence_visibility: Visibility,

    /// `false` puts /metrics behind the admin role.
    #[arg(long, env = "METRICS_PUBLIC", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_public: bool,

    /// Log output format; `RUST_LOG` sets levels.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Presence events pushed to the product's backend.
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Which store backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// This process's memory.
    Memory,
    /// Redis, shared by every instance.
    Redis,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A per-user token bucket: `burst` requests at once, then one per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed at once.
    pub burst: u32,
    /// Time to earn one more.
    pub period: Duration,
}

impl RateLimit {
    /// Parses `20,2s`.
    ///
    /// # Errors
    /// What the value should look like.
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = || format!("expected BURST,PERIOD like `20,2s`, got `{s}`");
        let (burst, period) = s.split_once(',').ok_or_else(expected)?;
        let burst: u32 = burst.trim().parse().map_err(|_| expected())?;
        let period = parse_duration(period.trim()).map_err(|e| format!("period: {e}"))?;
        if burst == 0 || period.is_zero() {
            return Err(format!("burst and period must be above zero, got `{s}`"));
        }
        // The limiter works in nanoseconds of a full bucket's refill;
        // keep that within the longest duration a setting may have.
        if period
            .checked_mul(burst)
            .is_none_or(|full| full > MAX_DURATION)
        {
            return Err(format!(
                "burst times period (the time to refill a full bucket) must be at most 365 days, got `{s}`"
            ));
        }
        Ok(Self { burst, period })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_parses_burst_and_period() {
        assert_eq!(
            RateLimit::parse("20,2s"),
            Ok(RateLimit {
                burst: 20,
                period: Duration::from_secs(2)
            })
        );
        assert!(RateLimit::parse("20").is_err());
        assert!(RateLimit::parse("0,2s").is_err());
        assert!(RateLimit::parse("x,2s").is_err());
    }
}
