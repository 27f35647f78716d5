//! The webhook settings (contract section 9): [`WebhookArgs`] as clap sees
//! them, checked once into [`Webhooks`], the endpoints and how to deliver
//! to them. `WEBHOOK_URL` unset: no webhooks.
//!
//! The secret and any credentials in a URL never reach a log line or a
//! `Debug` output: [`WebhookArgs`] and [`WebhookSecret`] redact them, and an
//! endpoint is shown by [`WebhookEndpoint::display`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clap::Args;
use sha2::{Digest, Sha256};

use super::ConfigError;
use super::parse::parse_duration;
use crate::domain::EventKind;

/// The webhook settings of `presence serve`.
#[derive(Clone, Args)]
pub struct WebhookArgs {
    /// Where events are POSTed: one or more comma-separated http(s) URLs,
    /// each getting every event [default: none, webhooks off].
    #[arg(
        long,
        env = "WEBHOOK_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_url: Vec<String>,

    /// The Standard Webhooks secret that signs every delivery: `whsec_`
    /// and the base64 of 24 to 64 random bytes; required with WEBHOOK_URL.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// The event types to send, comma-separated (user.online, user.offline,
    /// module.enter, module.leave, resource.join, resource.leave,
    /// resource.occupied, resource.vacated, user.state) [default: all].
    #[arg(long, env = "WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,

    /// How long a leave waits for the same user to come back; a leave and
    /// its return within it are both dropped (0s: off).
    #[arg(long, env = "WEBHOOK_LEAVE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_leave_grace: Duration,

    /// Longest one delivery attempt may take.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// How long an undelivered batch is retried before it is dropped.
    #[arg(long, env = "WEBHOOK_RETRY_FOR", default_value = "1h", value_parser = parse_duration)]
    pub webhook_retry_for: Duration,

    /// Most events waiting for one endpoint; past it the oldest are
    /// dropped and counted.
    #[arg(long, env = "WEBHOOK_QUEUE_MAX", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub webhook_queue_max: u32,
}

impl fmt::Debug for WebhookArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.webhook_url.iter().map(|u| for_display(u)).collect();
        f.debug_struct("WebhookArgs")
            .field("webhook_url", &urls)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_events", &self.webhook_events)
            .field("webhook_leave_grace", &self.webhook_leave_grace)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("webhook_retry_for", &self.webhook_retry_for)
            .field("webhook_queue_max", &self.webhook_queue_max)
            .finish()
    }
}

/// Webhooks as configured, checked: where to, signed how, which events,
/// and the delivery's timings.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// The endpoints, in `WEBHOOK_URL` order, each distinct.
    pub endpoints: Vec<WebhookEndpoint>,
    /// The signing key.
    pub secret: WebhookSecret,
    /// The event types sent (contract names); `None`: all of them.
    pub events: Option<Vec<EventKind>>,
    /// `WEBHOOK_LEAVE_GRACE` (zero: off).
    pub leave_grace: Duration,
    /// `WEBHOOK_TIMEOUT`, per attempt.
    pub timeout: Duration,
    /// `WEBHOOK_RETRY_FOR`, from a batch's first attempt.
    pub retry_for: Duration,
    /// `WEBHOOK_QUEUE_MAX`.
    pub queue_max: usize,
}

impl Webhooks {
    /// Whether events of type `name` (a contract name) are sent.
    pub fn sends(&self, kind: EventKind) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(&kind))
    }
}

/// One receiver of webhooks.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// The URL as configured, credentials included: for requests only.
    pub url: String,
    /// The URL with any `user:password@` removed: for logs, metrics and
    /// the admin API.
    pub display: String,
    /// A short stable name (16 hex digits of the SHA-256 of
    /// [`display`](Self::display)): the endpoint's name in the outbox, so
    /// its queue survives a restart and a change of password.
    pub key: String,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.display)
            .field("key", &self.key)
            .finish()
    }
}

impl WebhookEndpoint {
    /// The endpoint at `url`, if it is an absolute http(s) URL with a host.
    ///
    /// # Errors
    /// What is wrong with it (naming it without credentials).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let display = for_display(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("`{display}` is not a URL like https://example.com/hook ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "`{display}` is not an http(s) URL (scheme `{}`)",
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{display}` has no host"));
        }
        let digest = Sha256::digest(display.as_bytes());
        let key = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            url: url.to_owned(),
            display,
            key,
        })
    }
}

/// `url` without its `user:password@`, if it has one. Done on the text, so
/// a URL that does not parse is shown without its credentials too.
fn for_display(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_credentials, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_owned(),
    }
}

/// A Standard Webhooks signing key: the bytes after `whsec_`, decoded.
/// Its `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Arc<[u8]>);

impl WebhookSecret {
    /// The shortest key accepted, in bytes (192 bits).
    pub const MIN_BYTES: usize = 24;
    /// The longest key accepted, in bytes.
    pub const MAX_BYTES: usize = 64;

    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// What the secret should look like; never the secret itself.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected `whsec_` and the base64 of 24 to 64 random bytes \
                        (e.g. `whsec_$(openssl rand -base64 32)`)";
        let Some(encoded) = text.trim().strip_prefix("whsec_") else {
            return Err(format!("does not start with `whsec_`; {expected}"));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| format!("is not valid base64 after `whsec_`; {expected}"))?;
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&bytes.len()) {
            return Err(format!("holds {} bytes; {expected}", bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// The key bytes, for signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookArgs {
    /// The webhooks these settings describe; `None` when `WEBHOOK_URL` is
    /// not set (and neither is `WEBHOOK_SECRET`).
    ///
    /// # Errors
    /// The first setting that is wrong: a URL that is not http(s) or is
    /// given twice, a bad secret, an unknown event type, a URL without a
    /// secret or a secret without a URL, a zero timeout.
    pub(super) fn check(&self) -> Result<Option<Webhooks>, ConfigError> {
        let urls: Vec<&str> = self
            .webhook_url
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        let secret = self
            .webhook_secret
            .as_deref()
            .filter(|s| !s.trim().is_empty());
        let secret = match (urls.is_empty(), secret) {
            (true, None) => return Ok(None),
            (true, Some(_)) => {
                return Err(ConfigError::new(
                    "WEBHOOK_URL",
                    "required with WEBHOOK_SECRET: the http(s) URL(s) to POST events to",
                ));
            }
            (false, None) => {
                return Err(ConfigError::new(
                    "WEBHOOK_SECRET",
                    "required with WEBHOOK_URL: `whsec_` and the base64 of 24 to 64 random \
                     bytes (e.g. `whsec_$(openssl rand -base64 32)`)",
                ));
            }
            (false, Some(secret)) => {
                WebhookSecret::parse(secret).map_err(|e| ConfigError::new("WEBHOOK_SECRET", e))?
            }
        };
        let mut endpoints: Vec<WebhookEndpoint> = Vec::with_capacity(urls.len());
        for url in urls {
            let endpoint =
                WebhookEndpoint::parse(url).map_err(|e| ConfigError::new("WEBHOOK_URL", e))?;
            if endpoints.iter().any(|e| e.key == endpoint.key) {
                return Err(ConfigError::new(
                    "WEBHOOK_URL",
                    format!("`{}` is listed twice", endpoint.display),
                ));
            }
            endpoints.push(endpoint);
        }
        let mut events: Vec<EventKind> = Vec::new();
        for name in self.webhook_events.iter().map(|e| e.trim()) {
            if name.is_empty() {
                continue;
            }
            let kind = EventKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                ConfigError::new(
                    "WEBHOOK_EVENTS",
                    format!(
                        "`{name}` is not an event type; expected some of {}",
                        known.join(", ")
                    ),
                )
            })?;
            if !events.contains(&kind) {
                events.push(kind);
            }
        }
        if self.webhook_timeout.is_zero() {
            return Err(ConfigError::new("WEBHOOK_TIMEOUT", "must be above zero"));
        }
        Ok(Some(Webhooks {
            endpoints,
            secret,
            events: (!events.is_empty()).then_some(events),
            leave_grace: self.webhook_leave_grace,
            timeout: self.webhook_timeout,
            retry_for: self.webhook_retry_for,
            queue_max: usize::try_from(self.webhook_queue_max).unwrap_or(usize::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::serve;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn webhooks(args: &[&str]) -> Result<Option<Webhooks>, String> {
        serve(args).map(|c| c.webhooks)
    }

    fn error(args: &[&str]) -> String {
        let err = webhooks(args).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        err
    }

    #[test]
    fn without_a_url_there_are_no_webhooks() {
        assert!(webhooks(&[]).unwrap().is_none());
    }

    #[test]
    fn a_url_and_a_secret_give_endpoints_with_the_defaults() {
        let w = webhooks(&[
            "--webhook-url",
            "https://user:pa55@hooks.example.com/in?x=1, http://127.0.0.1:9000/h",
            "--webhook-secret",
            SECRET,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(w.endpoints.len(), 2);
        let first = &w.endpoints[0];
        assert_eq!(first.url, "https://user:pa55@hooks.example.com/in?x=1");
        assert_eq!(first.display, "https://hooks.example.com/in?x=1");
        assert_eq!(first.key.len(), 16);
        assert!(first.key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first.key, w.endpoints[1].key);
        assert_eq!(w.endpoints[1].display, "http://127.0.0.1:9000/h");
        assert_eq!(w.secret.expose().len(), 24);
        assert!(w.events.is_none() && w.sends(EventKind::UserState));
        assert_eq!(w.leave_grace, Duration::from_secs(5));
        assert_eq!(w.timeout, Duration::from_secs(5));
        assert_eq!(w.retry_for, Duration::from_secs(3600));
        assert_eq!(w.queue_max, 100_000);
    }

    #[test]
    fn the_key_is_stable_and_ignores_credentials() {
        let a = WebhookEndpoint::parse("https://a:b@example.com/h").unwrap();
        let b = WebhookEndpoint::parse("https://c:d@example.com/h").unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.key,
            WebhookEndpoint::parse("https://example.com/h").unwrap().key
        );
    }

    #[test]
    fn neither_debug_nor_errors_show_the_secret_or_credentials() {
        let cfg = serve(&[
            "--webhook-url",
            "https://user:pa55@hooks.example.com/in",
            "--webhook-secret",
            SECRET,
        ])
        .unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("pa55"), "{debug}");
        assert!(!debug.contains("C2FVsBQ"), "{debug}");
        assert!(debug.contains("hooks.example.com"), "{debug}");
        let err = error(&[
            "--webhook-url",
            "ftp://user:pa55@hooks.example.com/in",
            "--webhook-secret",
            SECRET,
        ]);
        assert!(!err.contains("pa55"), "{err}");
        let err = error(&[
            "--webhook-url",
            "https://example.com",
            "--webhook-secret",
            "whsec_c2hvcnQ=",
        ]);
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        for bad in [
            "ftp://example.com/h",
            "example.com/h",
            "https://",
            "mailto:a@example.com",
        ] {
            let err = error(&["--webhook-url", bad, "--webhook-secret", SECRET]);
            assert!(err.starts_with("WEBHOOK_URL:"), "{bad}: {err}");
        }
        let err = error(&[
            "--webhook-url",
            "https://a:b@example.com/h,https://example.com/h",
            "--webhook-secret",
            SECRET,
        ]);
        assert!(
            err.starts_with("WEBHOOK_URL:") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_secret_is_refused() {
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",       // no prefix
            "whsec_not base64!",                      // not base64
            "whsec_c2hvcnQ=",                         // 5 bytes
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", // 22 bytes
            &format!("whsec_{}", "A".repeat(88)),     // 66 bytes
        ] {
            let err = error(&[
                "--webhook-url",
                "https://example.com",
                "--webhook-secret",
                bad,
            ]);
            assert!(err.starts_with("WEBHOOK_SECRET:"), "{bad}: {err}");
        }
        for len in [24, 63, 64] {
            let text = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(vec![7_u8; len])
            );
            assert_eq!(WebhookSecret::parse(&text).unwrap().expose().len(), len);
        }
    }

    #[test]
    fn a_url_needs_a_secret_and_a_secret_a_url() {
        let err = error(&["--webhook-url", "https://example.com"]);
        assert!(err.starts_with("WEBHOOK_SECRET:"), "{err}");
        let err = error(&["--webhook-secret", SECRET]);
        assert!(err.starts_with("WEBHOOK_URL:"), "{err}");
    }

    #[test]
    fn events_are_checked_against_the_event_types() {
        let base = [
            "--webhook-url",
            "https://example.com",
            "--webhook-secret",
            SECRET,
        ];
        let mut args = base.to_vec();
        args.extend([
            "--webhook-events",
            "user.online, resource.leave,user.online",
        ]);
        let w = webhooks(&args).unwrap().unwrap();
        assert_eq!(
            w.events.as_deref(),
            Some(&[EventKind::UserOnline, EventKind::ResourceLeave][..])
        );
        assert!(w.sends(EventKind::ResourceLeave) && !w.sends(EventKind::UserState));
        let mut args = base.to_vec();
        args.extend(["--webhook-events", "user.online,user.away"]);
        let err = error(&args);
        assert!(
            err.starts_with("WEBHOOK_EVENTS:") && err.contains("`user.away`"),
            "{err}"
        );
    }

    #[test]
    fn bad_durations_and_sizes_name_their_variable() {
        let base = [
            "--webhook-url",
            "https://example.com",
            "--webhook-secret",
            SECRET,
        ];
        for (flag, value, variable) in [
            ("--webhook-timeout", "0s", "WEBHOOK_TIMEOUT"),
            ("--webhook-timeout", "soon", "WEBHOOK_TIMEOUT"),
            ("--webhook-leave-grace", "5", "WEBHOOK_LEAVE_GRACE"),
            ("--webhook-retry-for", "forever", "WEBHOOK_RETRY_FOR"),
            ("--webhook-queue-max", "0", "WEBHOOK_QUEUE_MAX"),
            ("--webhook-queue-max", "many", "WEBHOOK_QUEUE_MAX"),
        ] {
            let mut args = base.to_vec();
            args.extend([flag, value]);
            let err = error(&args);
            assert!(err.starts_with(variable), "{flag} {value}: {err}");
        }
        let mut args = base.to_vec();
        args.extend(["--webhook-leave-grace", "0s", "--webhook-retry-for", "10m"]);
        let w = webhooks(&args).unwrap().unwrap();
        assert!(w.leave_grace.is_zero());
        assert_eq!(w.retry_for, Duration::from_secs(600));
    }
}
