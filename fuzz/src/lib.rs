//! What the fuzz targets share: the real service, in-process.
//!
//! [`App`] is the router `presence::app` builds for a `presence serve`
//! command line, over the memory store and a stopped clock, driven one
//! request at a time with `tower::ServiceExt::oneshot` on a single-threaded
//! runtime built once per process. So a target tests exactly what production
//! runs: extractors, handlers, error rendering and middleware.
//!
//! [`check_contract`] is the oracle every response goes through: never a
//! 5xx (a handler panic would be a 500 from `CatchPanicLayer`; under
//! libFuzzer the panic hook aborts first, which is a crash too), and every
//! error is the contract's JSON body with the `code` of its status.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::DateTime;
use clap::Parser as _;
use http_body_util::BodyExt as _;
use presence::AppState;
use presence::clock::{Clock, ManualClock};
use presence::config::{Cli, Command, Config};
use presence::store::TimeSource;
use serde_json::Value;
use tower::ServiceExt as _;

/// The HS256 secret of every fuzzed app.
pub const SECRET: &str = "fuzz-secret-that-is-long-enough-for-hs256";

/// 2026-01-14T09:30:00Z: where every clock stands, for ever.
pub const START_MS: i64 = 1_768_383_000_000;

/// `presence serve` arguments every app gets: the secret, and a rate limit
/// no fuzzing run reaches (the limiter runs on the real monotonic clock).
const BASE_ARGS: &[&str] = &["--jwt-secret", SECRET, "--rate-limit", "1000000,1us"];

/// One response, its body read (unless it is an event stream, which never
/// ends).
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body; empty for `text/event-stream`.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics (a finding) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The service, in-process.
pub struct App {
    rt: tokio::runtime::Runtime,
    router: Router,
    /// Its state.
    pub state: AppState,
    /// Its configuration.
    pub config: Config,
    /// `Bearer <token>` of an ordinary user.
    pub user_bearer: String,
    /// `Bearer <token>` of an admin.
    pub admin_bearer: String,
}

/// A stopped clock at [`START_MS`].
pub fn clock() -> Arc<ManualClock> {
    let start = DateTime::from_timestamp_millis(START_MS).expect("START_MS is a date");
    Arc::new(ManualClock::new(start))
}

/// The configuration `presence serve <args>` runs with.
pub fn serve_config(args: &[&str]) -> Config {
    let mut argv = vec!["presence", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("arguments").command {
        Some(Command::Serve(serve)) => serve.into_config().expect("configuration"),
        _ => unreachable!("serve was given"),
    }
}

impl App {
    /// The service as `presence serve --jwt-secret SECRET <args>` runs it.
    pub fn new(args: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut all = BASE_ARGS.to_vec();
        all.extend_from_slice(args);
        let config = serve_config(&all);
        let clock = clock();
        let state = {
            let _runtime = rt.enter();
            AppState::build(&config, clock.clone(), TimeSource::Clock(clock.clone()))
                .expect("state")
        };
        let router = presence::app(state.clone(), &[]);
        let keys = presence::auth::KeySource::load(&config.args.jwt).expect("keys");
        let mint = |user: &str, role: Option<&str>| {
            let token = presence::auth::mint(
                &keys,
                &config.args.jwt,
                user,
                role,
                None,
                Duration::from_secs(3600),
                clock.now_ms(),
            )
            .expect("mint");
            format!("Bearer {token}")
        };
        let user_bearer = mint("fuzz-user", None);
        let admin_bearer = mint("fuzz-admin", Some("admin"));
        Self {
            rt,
            router,
            state,
            config,
            user_bearer,
            admin_bearer,
        }
    }

    /// Sends `request` through the whole router and checks the reply
    /// against [`check_contract`].
    pub fn send(&self, request: Request<Body>) -> Reply {
        let reply = self.rt.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|e| match e {});
            let (parts, body) = response.into_parts();
            let streaming = parts
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            // An event stream never ends: dropping it closes it, as a
            // client going away does.
            let body = if streaming {
                Bytes::new()
            } else {
                body.collect().await.expect("body").to_bytes()
            };
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        });
        check_contract(&reply);
        reply
    }
}

/// What every response must satisfy: no 5xx, and every 4xx is exactly
/// `{"success": false, "error": "<non-empty>", "code": "<code>"}` with the
/// status its code has, and `WWW-Authenticate: Bearer` on a 401.
pub fn check_contract(reply: &Reply) {
    assert!(
        !reply.status.is_server_error(),
        "server error {}: {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    if !reply.status.is_client_error() {
        return;
    }
    let body = reply.json();
    let object = body.as_object().expect("error body is an object");
    assert_eq!(object.len(), 3, "error body has three fields: {body}");
    assert_eq!(object.get("success"), Some(&Value::Bool(false)), "{body}");
    assert!(
        object
            .get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        "error message: {body}"
    );
    let code = object.get("code").and_then(Value::as_str).expect("code");
    let status = match code {
        "invalid_module" | "invalid_body" | "invalid_query" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "rate_limited" | "too_many_streams" => 429,
        other => panic!("unknown error code `{other}`: {body}"),
    };
    assert_eq!(reply.status.as_u16(), status, "status of `{code}`");
    if status == 401 {
        assert_eq!(
            reply.headers.get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "401 without WWW-Authenticate: Bearer"
        );
    }
}

/// `s` is 1 to `max` characters, none a control character: the contract's
/// rule for `page` and `resource`.
pub fn is_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// `s` is 1 to 64 of `[A-Za-z0-9_-]`: the contract's rule for `clientId`.
pub fn is_client_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
