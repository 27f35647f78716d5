//! Configuration: every setting is an environment variable and a flag.
//!
//! [`Cli`] is the command line as clap sees it (`long, env` on every field,
//! so `SESSION_TTL=5m` and `--session-ttl 5m` are the same setting).
//! [`ServeArgs::into_config`] then checks what one field cannot check alone
//! (a key source, the heartbeat interval against the TTL) and yields the
//! [`Config`] the service runs with. Any bad value is one line on stderr
//! naming the variable, and exit status 2 ([`ConfigError`]).
//!
//! # Layout
//! - this file: the command line ([`Cli`], [`Command`], [`TokenArgs`]),
//!   [`Config`], [`ConfigError`], and [`ServeArgs::into_config`], which
//!   checks the settings together.
//! - `serve.rs`: [`ServeArgs`], the settings of `presence serve`, and the
//!   small values they hold ([`StoreKind`], [`LogFormat`], [`RateLimit`]).
//! - `jwt.rs`: [`JwtArgs`], how tokens are checked, with [`ProfileClaims`]
//!   and [`Visibility`].
//! - `redis.rs`: the Redis settings, checked into one [`RedisTopology`].
//! - `state_file.rs`: `STATE_FILE`, checked against the store and the disk.
//! - `webhooks.rs`: the `WEBHOOK_*` settings, checked into [`Webhooks`].
//! - `parse.rs`: the parsers of single values, and [`one_line`], which
//!   turns clap's errors about them into the contract's one line.

mod jwt;
mod parse;
mod redis;
mod serve;
mod state_file;
mod webhooks;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use jwt::{JwtArgs, ProfileClaims, Visibility};
pub use parse::{MAX_DURATION, one_line, parse_duration};
pub use redis::{DEFAULT_REDIS_URL, RedisTopology};
pub use serve::{LogFormat, RateLimit, ServeArgs, StoreKind};
use state_file::check_state_file;
pub(crate) use state_file::directory_of;
pub use webhooks::{WebhookArgs, WebhookEndpoint, WebhookSecret, Webhooks};

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
    /// Where Redis is, with `STORE=redis`; `None` with the memory store.
    pub redis: Option<RedisTopology>,
    /// The webhook endpoints and how to deliver to them; `None` without
    /// `WEBHOOK_URL`.
    pub webhooks: Option<Webhooks>,
}

/// How long a session lasts without a heartbeat when `SESSION_TTL` is not
/// set.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(300);

/// The cadence suggested to clients when `HEARTBEAT_INTERVAL` is not set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(45);

/// How often expired sessions are swept when `SWEEP_INTERVAL` is not set.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest `SWEEP_INTERVAL`: below it the sweeper would keep a core
/// busy for nothing, since counts never depend on it.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The shortest `HEARTBEAT_INTERVAL`: clients beat at this cadence, so
/// below a second every client would hammer the service (and its rate
/// limit) for no better count.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

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
        if heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            let hint = if self.heartbeat_interval.is_some() {
                "set at least 1s"
            } else {
                "it defaults to a third of SESSION_TTL, so set SESSION_TTL to at least 3s"
            };
            return Err(ConfigError::new(
                "HEARTBEAT_INTERVAL",
                format!(
                    "is {}, under 1s, which would have every client beat as fast as it can; {hint}",
                    humantime::format_duration(heartbeat_interval)
                ),
            ));
        }
        if heartbeat_interval >= ttl {
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
        // Counts never depend on the sweep, so any period from 100 ms works
        // (shorter only spins a core); unset, it keeps memory within one
        // TTL of the live sessions.
        let sweep_interval = self
            .sweep_interval
            .unwrap_or_else(|| DEFAULT_SWEEP_INTERVAL.min(ttl).max(MIN_SWEEP_INTERVAL));
        if sweep_interval < MIN_SWEEP_INTERVAL {
            return Err(ConfigError::new(
                "SWEEP_INTERVAL",
                format!(
                    "is {}, which must be at least 100ms (counts never depend on the sweep; \
                     a shorter period only keeps a core busy)",
                    humantime::format_duration(sweep_interval)
                ),
            ));
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
        let redis = match self.store {
            StoreKind::Memory => None,
            StoreKind::Redis => Some(self.redis_topology()?),
        };
        if let Some(path) = &self.state_file {
            check_state_file(path, self.store)?;
        }
        self.check_demo_mode()?;
        let webhooks = self.webhooks.check()?;
        Ok(Config {
            args: self,
            heartbeat_interval,
            sweep_interval,
            redis,
            webhooks,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `presence serve` with `args`, checked: the config, or the one line
    /// the binary would print.
    pub(super) fn serve(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["presence", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| one_line(&e).unwrap_or(e.to_string()))?;
        match cli.command {
            Some(Command::Serve(args)) => args.into_config().map_err(|e| e.to_string()),
            _ => Err("not serve".into()),
        }
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
    fn durations_out_of_range_are_refused_naming_the_variable() {
        for (flag, value, variable) in [
            ("--rate-limit", "1,999999999999h", "RATE_LIMIT"),
            ("--rate-limit", "4000000000,1h", "RATE_LIMIT"),
            ("--session-ttl", "999999999999h", "SESSION_TTL"),
            ("--sweep-interval", "999999999999h", "SWEEP_INTERVAL"),
            (
                "--heartbeat-interval",
                "999999999999h",
                "HEARTBEAT_INTERVAL",
            ),
            ("--jwt-leeway", "999999999999h", "JWT_LEEWAY"),
            ("--request-timeout", "999999999999h", "REQUEST_TIMEOUT"),
            (
                "--header-read-timeout",
                "999999999999h",
                "HEADER_READ_TIMEOUT",
            ),
            ("--webhook-retry-for", "999999999999h", "WEBHOOK_RETRY_FOR"),
        ] {
            let err = serve(&[flag, value]).unwrap_err();
            assert!(err.starts_with(variable), "{flag} {value}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // The longest allowed and the benchmarks' lifted limit still start.
        assert!(serve(&["--rate-limit", "1,365d"]).is_ok());
        assert!(serve(&["--rate-limit", "1000000,1ms"]).is_ok());
        assert!(serve(&["--session-ttl", "365d"]).is_ok());
    }

    #[test]
    fn intervals_that_would_spin_are_refused() {
        for (flag, value, variable) in [
            ("--sweep-interval", "1ns", "SWEEP_INTERVAL"),
            ("--sweep-interval", "99ms", "SWEEP_INTERVAL"),
            ("--heartbeat-interval", "1ns", "HEARTBEAT_INTERVAL"),
            ("--heartbeat-interval", "999ms", "HEARTBEAT_INTERVAL"),
        ] {
            let err = serve(&[flag, value]).unwrap_err();
            assert!(err.starts_with(variable), "{flag} {value}: {err}");
        }
        let cfg = serve(&["--sweep-interval", "100ms"]).unwrap();
        assert_eq!(cfg.sweep_interval, Duration::from_millis(100));
        let cfg = serve(&["--heartbeat-interval", "1s"]).unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(1));
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
}
