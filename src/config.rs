//! Configuration: every setting is an environment variable and a flag.
//!
//! [`Cli`] is the command line as clap sees it (`long, env` on every field,
//! so `SESSION_TTL=5m` and `--session-ttl 5m` are the same setting).
//! [`ServeArgs::into_config`] then checks what one field cannot check alone
//! (a key source, the heartbeat interval against the TTL) and yields the
//! [`Config`] the service runs with. Any bad value is one line on stderr
//! naming the variable, and exit status 2 ([`ConfigError`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::Modules;

/// Live presence for a web product: who is active in which module, now,
/// today and ever.
#[derive(Debug, Parser)]
#[command(name = "presence", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; with none, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings of `serve`, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start-up")]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Mint a token with the configured `JWT_SECRET`, for manual checks.
    Token(TokenArgs),
}

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
}

/// `REDIS_URL` when it is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl ServeArgs {
    /// `REDIS_URL`, or its default.
    pub fn redis_url(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// `REDIS_URL` fit for a log line: any user and password replaced.
    pub fn redis_url_for_logs(&self) -> String {
        hide_password(self.redis_url())
    }

    /// Which Redis, for a log line, without passwords: the URL, the
    /// sentinels and master, or the cluster's seeds.
    pub fn redis_for_logs(&self) -> String {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| hide_password(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.redis_sentinels.is_empty() {
            format!(
                "master {} of sentinels {}",
                self.redis_sentinel_master.as_deref().unwrap_or_default(),
                list(&self.redis_sentinels)
            )
        } else if !self.redis_cluster_nodes.is_empty() {
            format!("cluster with seeds {}", list(&self.redis_cluster_nodes))
        } else {
            self.redis_url_for_logs()
        }
    }

    /// Checks that at most one Redis topology is set, and each completely;
    /// turns `host:port` entries into URLs.
    fn check_redis(&mut self) -> Result<(), ConfigError> {
        self.redis_sentinels.retain(|s| !s.trim().is_empty());
        self.redis_cluster_nodes.retain(|s| !s.trim().is_empty());
        let set: Vec<&'static str> = [
            ("REDIS_URL", self.redis_url.is_some()),
            ("REDIS_SENTINELS", !self.redis_sentinels.is_empty()),
            ("REDIS_CLUSTER_NODES", !self.redis_cluster_nodes.is_empty()),
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
        match (&self.redis_sentinel_master, self.redis_sentinels.is_empty()) {
            (None, false) => {
                return Err(ConfigError::new(
                    "REDIS_SENTINEL_MASTER",
                    "required with REDIS_SENTINELS: the master's name in the sentinels' \
                     configuration (as in `sentinel monitor <name> ...`)",
                ));
            }
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "REDIS_SENTINELS",
                    "required with REDIS_SENTINEL_MASTER: the sentinels, as host:port,host:port",
                ));
            }
            (Some(name), false) if name.trim().is_empty() => {
                return Err(ConfigError::new(
                    "REDIS_SENTINEL_MASTER",
                    "must not be empty with REDIS_SENTINELS",
                ));
            }
            _ => {}
        }
        for (variable, list) in [
            ("REDIS_SENTINELS", &mut self.redis_sentinels),
            ("REDIS_CLUSTER_NODES", &mut self.redis_cluster_nodes),
        ] {
            for entry in list.iter_mut() {
                *entry = node_url(entry).ok_or_else(|| {
                    ConfigError::new(
                        variable,
                        format!(
                            "`{entry}` is not host:port (like 127.0.0.1:26379) or a redis:// URL"
                        ),
                    )
                })?;
            }
        }
        let url = redis::IntoConnectionInfo::into_connection_info(self.redis_url());
        if let Err(e) = url {
            return Err(ConfigError::new(
                "REDIS_URL",
                format!("expected a URL like redis://127.0.0.1:6379 ({e})"),
            ));
        }
        Ok(())
    }
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
    redis::IntoConnectionInfo::into_connection_info(url.as_str()).ok()?;
    Some(url)
}

/// Settings of `presence token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id to put in the user claim (all digits: a JSON integer).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// A role claim, e.g. `admin`.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// A `name` claim, shown in the user's profile, e.g. `Ann Lee`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How long the token is valid.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The key and claims to sign with.
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// How tokens are checked (contract section 2).
#[derive(Clone, Args)]
pub struct JwtArgs {
    /// HS256 key. With no key at all the service runs in demo mode.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS*, PS*, ES* or EdDSA tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Accepted algorithms, comma-separated [default: HS256, or the key's
    /// family].
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',', value_parser = parse_algorithm)]
    pub jwt_algorithms: Vec<jsonwebtoken::Algorithm>,

    /// Required `iss`, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud`, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Claim holding the user id (`sub` falls back to `userId`, then `id`).
    #[arg(long, env = "JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// Role value that grants admin (claim `role`, or in claim `roles`).
    #[arg(long, env = "JWT_ADMIN_ROLE", default_value = "admin")]
    pub jwt_admin_role: String,

    /// Reject tokens without `exp`.
    #[arg(long, env = "JWT_REQUIRE_EXP", default_value_t = true, action = clap::ArgAction::Set)]
    pub jwt_require_exp: bool,

    /// String claims copied from the token and shown with the user
    /// wherever presence lists them, comma-separated; `none` for none.
    #[arg(long, env = "PROFILE_CLAIMS", default_value = "name,picture", value_parser = ProfileClaims::parse)]
    pub profile_claims: ProfileClaims,

    /// A token with this claim `true` is counted in module stats but never
    /// listed in viewers or user status.
    #[arg(long, env = "JWT_HIDDEN_CLAIM", default_value = "presence_hidden", value_parser = parse_claim_name)]
    pub jwt_hidden_claim: String,

    /// Claim with the resource patterns a user may watch under
    /// PRESENCE_VISIBILITY=scoped (a string or an array of strings: exact
    /// ids, or prefixes ending in `*`).
    #[arg(long, env = "JWT_SCOPE_CLAIM", default_value = "presence_scope", value_parser = parse_claim_name)]
    pub jwt_scope_claim: String,
}

/// `PROFILE_CLAIMS`: the claims a profile is made of, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileClaims(pub Vec<String>);

impl ProfileClaims {
    /// The most claims a profile may name.
    pub const MAX: usize = 16;

    /// Parses `name,picture`; `none` (or nothing but commas and spaces:
    /// an empty environment variable counts as unset) is no claims.
    ///
    /// # Errors
    /// A claim name that is not 1 to 64 printable characters, a repeated
    /// one, or more than [`Self::MAX`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut claims: Vec<String> = Vec::new();
        if s.trim() == "none" {
            return Ok(Self(claims));
        }
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = parse_claim_name(name)?;
            if claims.contains(&name) {
                return Err(format!("`{name}` is named twice"));
            }
            claims.push(name);
        }
        if claims.len() > Self::MAX {
            return Err(format!("at most {} claims", Self::MAX));
        }
        Ok(Self(claims))
    }
}

/// A claim name: 1 to 64 printable ASCII characters, no comma.
fn parse_claim_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a claim name of 1 to 64 printable characters, got `{s}`"
        ))
    }
}

/// `PRESENCE_VISIBILITY`: who may read viewers and user status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Visibility {
    /// Any authenticated user.
    #[default]
    Users,
    /// Non-admins only resources their scope claim matches.
    Scoped,
    /// Admins only.
    Admins,
}

impl fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtArgs")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_user_claim", &self.jwt_user_claim)
            .field("jwt_admin_role", &self.jwt_admin_role)
            .field("jwt_require_exp", &self.jwt_require_exp)
            .field("profile_claims", &self.profile_claims)
            .field("jwt_hidden_claim", &self.jwt_hidden_claim)
            .field("jwt_scope_claim", &self.jwt_scope_claim)
            .finish()
    }
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
        let period = parse_duration(period.trim()).map_err(|_| expected())?;
        if burst == 0 || period.is_zero() {
            return Err(format!("burst and period must be above zero, got `{s}`"));
        }
        Ok(Self { burst, period })
    }
}

/// Everything `presence serve` runs with, checked as a whole. Plain
/// values only: key files are read, and the store opened, when the
/// service state is built.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings, each valid alone and together.
    pub args: ServeArgs,
    /// `HEARTBEAT_INTERVAL`, or its default for the TTL.
    pub heartbeat_interval: Duration,
    /// `SWEEP_INTERVAL`, or its default for the TTL.
    pub sweep_interval: Duration,
}

/// How long a session lasts without a heartbeat when `SESSION_TTL` is not
/// set.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(300);

/// The cadence suggested to clients when `HEARTBEAT_INTERVAL` is not set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(45);

/// How often expired sessions are swept when `SWEEP_INTERVAL` is not set.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A setting that stops start-up: one line naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What it expects.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

impl ServeArgs {
    /// Checks the settings that depend on each other.
    ///
    /// # Errors
    /// The first setting that is wrong.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        if self.session_ttl.is_zero() {
            return Err(ConfigError::new("SESSION_TTL", "must be above zero"));
        }
        let ttl = self.session_ttl;
        // Unset, the cadence follows a short TTL: three beats per TTL, so
        // one lost heartbeat never ends a session.
        let heartbeat_interval = self
            .heartbeat_interval
            .unwrap_or_else(|| DEFAULT_HEARTBEAT_INTERVAL.min(ttl / 3));
        if heartbeat_interval.is_zero() || heartbeat_interval >= ttl {
            let ttl_source = if ttl == DEFAULT_SESSION_TTL {
                " (the default)"
            } else {
                ""
            };
            return Err(ConfigError::new(
                "HEARTBEAT_INTERVAL",
                format!(
                    "is {}, which must be above zero and under SESSION_TTL, which is {}{ttl_source}; \
                     set HEARTBEAT_INTERVAL to at most a third of SESSION_TTL, or leave it unset",
                    humantime::format_duration(heartbeat_interval),
                    humantime::format_duration(ttl)
                ),
            ));
        }
        // Counts never depend on the sweep, so any positive period works;
        // unset, it keeps memory within one TTL of the live sessions.
        let sweep_interval = self
            .sweep_interval
            .unwrap_or_else(|| DEFAULT_SWEEP_INTERVAL.min(ttl));
        if sweep_interval.is_zero() {
            return Err(ConfigError::new("SWEEP_INTERVAL", "must be above zero"));
        }
        for (variable, timeout) in [
            ("REQUEST_TIMEOUT", self.request_timeout),
            ("HEADER_READ_TIMEOUT", self.header_read_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError::new(variable, "must be above zero"));
            }
        }
        for origin in &mut self.cors_allowed_origins {
            *origin = normalise_origin(origin).ok_or_else(|| {
                ConfigError::new(
                    "CORS_ALLOWED_ORIGINS",
                    format!(
                        "`{origin}` is not an origin like https://app.example.com \
                         (scheme, host and optional port; no path)"
                    ),
                )
            })?;
        }
        if self.store == StoreKind::Redis {
            self.check_redis()?;
        }
        if let Some(path) = &self.state_file {
            check_state_file(path, self.store)?;
        }
        self.check_demo_mode()?;
        Ok(Config {
            args: self,
            heartbeat_interval,
            sweep_interval,
        })
    }

    /// With no key, demo mode signs tokens with a random key and its page
    /// mints one for any user name: fine on this machine, an open door on
    /// a shared store or a reachable address. So it runs only on a loopback
    /// address with the memory store, unless `DEMO=true` says it is meant.
    fn check_demo_mode(&self) -> Result<(), ConfigError> {
        let keyless = self.jwt.jwt_secret.is_none() && self.jwt.jwt_public_key_file.is_none();
        let local = self.listen_addr.ip().is_loopback() && self.store == StoreKind::Memory;
        if !keyless || local || self.demo {
            return Ok(());
        }
        let store = match self.store {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        };
        Err(ConfigError::new(
            "JWT_SECRET",
            format!(
                "not set (nor JWT_PUBLIC_KEY_FILE); without a key the service runs in demo mode, \
                 which lets anyone mint tokens, and only on a loopback address with STORE=memory \
                 (here LISTEN_ADDR={} and STORE={store}); set JWT_SECRET, or DEMO=true if a \
                 demo is what you want",
                self.listen_addr
            ),
        ))
    }
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, the
/// scheme and host in lower case. A trailing `/` is dropped (it is a common
/// way to write one); a path, query, user or space is refused, since such a
/// value would never match and CORS would fail without a word.
fn normalise_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    let (scheme, authority) = origin.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let valid_authority = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@'));
    (valid_scheme && valid_authority).then(|| origin.to_ascii_lowercase())
}

const STATE_FILE_EXAMPLE: &str = "/var/lib/presence/state.json";

fn parse_state_file(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err(format!(
            "expected a file path like {STATE_FILE_EXAMPLE} (unset it to keep nothing)"
        ));
    }
    Ok(PathBuf::from(s))
}

/// `STATE_FILE` is for the memory store, and names a file in a directory
/// that exists (the file itself may not exist yet; if it does, it is a
/// regular file). What the file holds is
/// not checked here: an unusable snapshot never stops start-up.
fn check_state_file(path: &Path, store: StoreKind) -> Result<(), ConfigError> {
    let fail = |message: String| Err(ConfigError::new("STATE_FILE", message));
    if store == StoreKind::Redis {
        return fail("only for STORE=memory; with STORE=redis the state lives in Redis".into());
    }
    if path.is_dir() {
        return fail(format!(
            "`{}` is a directory; expected a file path like {STATE_FILE_EXAMPLE}",
            path.display()
        ));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        // A FIFO would block the start-up read, a device never end it, and
        // neither may be renamed aside like an unusable snapshot.
        return fail(format!(
            "`{}` is not a regular file; expected a file path like {STATE_FILE_EXAMPLE}",
            path.display()
        ));
    }
    let dir = directory_of(path);
    if !dir.is_dir() {
        return fail(format!("directory `{}` does not exist", dir.display()));
    }
    Ok(())
}

/// The directory a file path is in: its parent, or `.` for a bare name.
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Parses a humantime duration (`45s`, `5m`, `1h 30m`).
///
/// # Errors
/// What a duration looks like.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration like 45s or 5m ({e})"))
}

fn parse_key_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 64 printable characters without braces".into())
    }
}

fn parse_timezone(s: &str) -> Result<Tz, String> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| format!("expected an IANA time zone like Europe/Berlin, got `{s}`"))
}

fn parse_algorithm(s: &str) -> Result<jsonwebtoken::Algorithm, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA")
    })
}

/// Turns a clap error into the contract's one-line message where the error
/// is about a value; other errors (help, version, unknown flags) are clap's.
pub fn one_line(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return None,
    };
    // `--session-ttl <SESSION_TTL>`: a setting's value name is its
    // variable; a flag without a variable (`--ttl <DURATION>`) is named alone.
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_owned();
    let value_name = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(name, _)| name.to_owned());
    let from_flag = flag
        .trim_start_matches('-')
        .replace('-', "_")
        .to_uppercase();
    let variable = match value_name {
        Some(name) if name == from_flag => format!("{name} ({flag})"),
        _ => flag,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let why = std::error::Error::source(err).map_or_else(
        || match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(v)) => format!("expected one of {}", v.join(", ")),
            _ => "invalid value".to_owned(),
        },
        ToString::to_string,
    );
    Some(format!("{variable}: invalid value `{value}`: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["presence", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| one_line(&e).unwrap_or(e.to_string()))?;
        match cli.command {
            Some(Command::Serve(args)) => args.into_config().map_err(|e| e.to_string()),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn bad_duration_names_the_variable_on_one_line() {
        let err = serve(&["--session-ttl", "soon"]).unwrap_err();
        assert!(err.starts_with("SESSION_TTL (--session-ttl)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn heartbeat_interval_must_be_under_the_ttl() {
        let err = serve(&["--heartbeat-interval", "5m", "--session-ttl", "5m"]).unwrap_err();
        assert!(err.starts_with("HEARTBEAT_INTERVAL:"), "{err}");
        assert!(
            err.contains("is 5m") && err.contains("which is 5m"),
            "{err}"
        );
        let err = serve(&["--heartbeat-interval", "6m"]).unwrap_err();
        assert!(err.contains("which is 5m (the default)"), "{err}");
    }

    #[test]
    fn a_short_ttl_alone_is_enough_to_start() {
        let cfg = serve(&["--session-ttl", "30s"]).unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(cfg.sweep_interval, Duration::from_secs(30));
        let cfg = serve(&[]).unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(45));
        assert_eq!(cfg.sweep_interval, Duration::from_secs(60));
        // Set explicitly, either is kept; the sweep may be any positive period.
        let cfg = serve(&["--session-ttl", "30s", "--heartbeat-interval", "20s"]).unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(20));
        let cfg = serve(&["--session-ttl", "30s", "--sweep-interval", "5m"]).unwrap();
        assert_eq!(cfg.sweep_interval, Duration::from_secs(300));
        assert!(serve(&["--sweep-interval", "0s"]).is_err());
    }

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

    #[test]
    fn unknown_store_lists_the_possible_values() {
        let err = serve(&["--store", "postgres"]).unwrap_err();
        assert!(err.starts_with("STORE (--store)"), "{err}");
        assert!(err.contains("memory") && err.contains("redis"), "{err}");
    }

    #[test]
    fn a_bad_redis_url_names_the_variable() {
        let err = serve(&["--store", "redis", "--redis-url", "http://x"]).unwrap_err();
        assert!(err.starts_with("REDIS_URL:"), "{err}");
        let err = serve(&["--redis-key-prefix", "a{b}"]).unwrap_err();
        assert!(err.starts_with("REDIS_KEY_PREFIX"), "{err}");
    }

    #[test]
    fn state_file_is_for_the_memory_store_in_a_directory_that_exists() {
        let err = serve(&["--store", "redis", "--state-file", "state.json"]).unwrap_err();
        assert!(err.starts_with("STATE_FILE:"), "{err}");
        let err = serve(&["--state-file", "/nonexistent/dir/state.json"]).unwrap_err();
        assert!(
            err.starts_with("STATE_FILE:") && err.contains("/nonexistent/dir"),
            "{err}"
        );
        let err = serve(&["--state-file", "/"]).unwrap_err();
        assert!(err.starts_with("STATE_FILE:"), "{err}");
        let err = serve(&["--state-file", ""]).unwrap_err();
        assert!(err.starts_with("STATE_FILE (--state-file)"), "{err}");
        assert!(err.contains("expected a file path"), "{err}");
        assert!(serve(&["--state-file", "state.json"]).is_ok());
    }

    #[test]
    fn cors_origins_are_normalised_or_refused() {
        let cfg = serve(&[
            "--cors-allowed-origins",
            "https://App.Example.com/,http://localhost:3000",
        ])
        .unwrap();
        assert_eq!(
            cfg.args.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        for bad in [
            "https://app.example.com/path",
            "app.example.com",
            "https://",
            "https://a b",
        ] {
            let err = serve(&["--cors-allowed-origins", bad]).unwrap_err();
            assert!(err.starts_with("CORS_ALLOWED_ORIGINS:"), "{bad}: {err}");
        }
    }

    #[test]
    fn without_a_key_only_a_local_memory_store_or_demo_true_may_start() {
        for args in [
            &["--listen-addr", "0.0.0.0:8080"][..],
            &["--listen-addr", "192.0.2.1:8080"],
            &["--listen-addr", "[::]:8080"],
            &["--store", "redis"],
            &["--listen-addr", "0.0.0.0:8080", "--demo", "false"],
        ] {
            let err = serve(args).unwrap_err();
            assert!(err.starts_with("JWT_SECRET:"), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        for args in [
            &[][..],
            &["--listen-addr", "[::1]:8080"],
            &["--listen-addr", "0.0.0.0:8080", "--demo"],
            &["--store", "redis", "--demo", "true"],
            &["--listen-addr", "0.0.0.0:8080", "--jwt-secret", "s3cret"],
        ] {
            assert!(serve(args).is_ok(), "{args:?}");
        }
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
        assert_eq!(cfg.args.redis_sentinels, ["redis://b:2", "redis://c:3"]);
        assert_eq!(
            cfg.args.redis_for_logs(),
            "master m of sentinels redis://b:2,redis://c:3"
        );
        let cfg = redis(&["--redis-cluster-nodes", "c:3,redis://:pw@d:4"]).unwrap();
        assert_eq!(
            cfg.args.redis_for_logs(),
            "cluster with seeds redis://c:3,redis://***@d:4"
        );
        let cfg = redis(&[]).unwrap();
        assert_eq!(cfg.args.redis_for_logs(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn presence_settings_parse_or_name_their_variable() {
        let cfg = serve(&[]).unwrap();
        assert_eq!(cfg.args.jwt.profile_claims.0, ["name", "picture"]);
        assert_eq!(cfg.args.presence_visibility, Visibility::Users);
        assert_eq!(cfg.args.jwt.jwt_hidden_claim, "presence_hidden");
        assert_eq!(cfg.args.jwt.jwt_scope_claim, "presence_scope");
        let cfg = serve(&[
            "--profile-claims",
            "none",
            "--presence-visibility",
            "scoped",
        ])
        .unwrap();
        assert!(cfg.args.jwt.profile_claims.0.is_empty());
        assert_eq!(cfg.args.presence_visibility, Visibility::Scoped);
        let err = serve(&["--profile-claims", "name,name"]).unwrap_err();
        assert!(
            err.starts_with("PROFILE_CLAIMS (--profile-claims)"),
            "{err}"
        );
        let err = serve(&["--presence-visibility", "everyone"]).unwrap_err();
        assert!(
            err.starts_with("PRESENCE_VISIBILITY (--presence-visibility)"),
            "{err}"
        );
        assert!(err.contains("scoped"), "{err}");
        let err = serve(&["--jwt-scope-claim", "a b"]).unwrap_err();
        assert!(
            err.starts_with("JWT_SCOPE_CLAIM (--jwt-scope-claim)"),
            "{err}"
        );
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let cfg = serve(&["--jwt-secret", "hunter2-very-secret"]).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
