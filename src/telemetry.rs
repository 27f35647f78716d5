//! Logs for operators: set-up, the per-request line (at `debug` only), and
//! a summary line a minute.
//!
//! At the default level (`info`) the log is not an access log: start-up,
//! configuration warnings, errors, store outages and recoveries, and at most
//! one summary line a minute ([`summarise`]). Every request gets a line at
//! `debug` (`RUST_LOG=presence=debug`), and a 500 gets one at `error` with
//! its request id and what went wrong; at the default level no request span
//! is built at all. Those request lines are written by the edge layer
//! (`http::edge`), which sees every request.
//!
//! Logs go to stderr (stdout is kept for what the binary prints on purpose:
//! the demo token, `presence token`), in colour only on a terminal and never
//! with `NO_COLOR` set. A request's line records its method, path and id,
//! never its query string or headers, so a token sent as `?access_token=` or
//! `Authorization` cannot reach a log line.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::clock::{First, every};
use crate::config::LogFormat;
use crate::metrics::Metrics;
use crate::store::{SessionStore as _, Store};

/// How often the summary line is written (when anything happened).
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// Installs the global subscriber. `RUST_LOG` sets levels (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // A second call (tests spawning several apps) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Writes one `info` line every [`SUMMARY_PERIOD`] in which anything was
/// answered: requests by status class, heartbeats recorded, and the live
/// sessions now; until `cancel` fires.
pub async fn summarise(metrics: Arc<Metrics>, store: Store, cancel: CancellationToken) {
    every(SUMMARY_PERIOD, First::AfterPeriod, &cancel, || async {
        let ([_, ok, redirect, client, server], heartbeats) = metrics.take_summary();
        let requests = ok + redirect + client + server;
        if requests == 0 {
            return;
        }
        let live = match tokio::time::timeout(Duration::from_secs(1), store.live_sessions()).await {
            Ok(Ok(per_module)) => per_module.iter().sum::<u64>().to_string(),
            _ => "unknown (store unavailable)".to_owned(),
        };
        tracing::info!(
            requests,
            ok,
            client_errors = client,
            server_errors = server,
            heartbeats,
            live_sessions = %live,
            "summary of the last minute"
        );
    })
    .await;
}
