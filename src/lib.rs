//! presence: who is using which part of a web product, live.
//!
//! # Layout
//! Four layers; a module imports only from its own layer and those below
//! it (`tests/api/layers.rs` reads `src/` and fails otherwise).
//!
//! **app**: composes the rest.
//! - `main.rs`: parses the command line, then serves or mints a token.
//! - this file: [`app`] builds the router for a state; [`serve`] runs it
//!   with the background tasks until a shutdown future completes. Both take
//!   their inputs as arguments, so tests run the real service on port 0
//!   with their own clock and keys.
//! - [`telemetry`]: log set-up and the summary line.
//!
//! **http**: everything that speaks HTTP, in [`http`], whose own page
//! tours its files: the shared state, errors and extractors, the server
//! and its edge, the route metrics, the event streams ([`http::sse`]), and
//! the routes ([`http::routes`]), leaves that import nothing from each
//! other.
//!
//! **core**: what the service does, with no HTTP types.
//! - [`auth`]: keys, token verification and its cache, minting.
//! - [`store`]: the session store trait and its backends; the memory
//!   store's snapshots, kept across restarts (`STATE_FILE`), are
//!   [`store::memory::snapshot`].
//! - [`limiter`]: the per-user rate limit.
//! - [`metrics`]: the Prometheus registry and what updates it.
//! - [`sweeper`]: the store's background tasks (expiry, history samples).
//! - [`events`]: presence events (who came, left, went idle), computed from
//!   each change to a user's sessions.
//! - [`webhooks`]: those events delivered to the product's backend.
//!
//! **base**: plain values every layer uses.
//! - [`config`]: every setting as a flag and an environment variable.
//! - [`clock`]: the time source, replaceable in tests, and local days.
//! - [`domain`]: validated values (module, user, client, page, resource,
//!   activity state, profile).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod webhooks;

pub use http::state::AppState;

use http::edge::{EdgeLayer, MAX_BODY_BYTES, REQUEST_ID};
use http::track::TrackLayer;
use http::{error, routes, server, sse};

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole HTTP service for `state`. `cors_origins` empty: no CORS headers.
pub fn app(state: AppState, cors_origins: &[String]) -> Router {
    let (api, _doc) = routes::api(&state.modules);
    let edge = EdgeLayer::new(state.limits.clone(), state.metrics.clone());
    let router = api
        .merge(routes::pages(state.demo.is_some()))
        .route_layer(TrackLayer(state.metrics.clone()))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .layer(edge);
    // CORS wraps the edge, so a browser can read its 503, 408 or 500 too.
    if cors_origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(allowed_origins(cors_origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            // The browser client backs off by Retry-After.
            .expose_headers([header::RETRY_AFTER, REQUEST_ID])
            .max_age(Duration::from_secs(3600)),
    )
}

/// Origins allowed by CORS. A preflight from any other origin is refused
/// (no CORS headers), and logged once per origin at `warn`, naming the
/// setting, so an operator sees why a browser cannot call the API; at most
/// [`MAX_REFUSED_ORIGINS_LOGGED`] distinct origins are remembered for that.
fn allowed_origins(origins: &[String]) -> AllowOrigin {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let logged = std::sync::Mutex::new(std::collections::HashSet::new());
    AllowOrigin::predicate(move |origin, request| {
        if allowed.contains(origin) {
            return true;
        }
        if request.method == Method::OPTIONS {
            let mut logged = logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if logged.len() < MAX_REFUSED_ORIGINS_LOGGED && logged.insert(origin.clone()) {
                tracing::warn!(
                    origin = %String::from_utf8_lossy(origin.as_bytes()),
                    "CORS preflight refused: the origin is not in CORS_ALLOWED_ORIGINS"
                );
            }
        }
        false
    })
}

/// Distinct refused origins logged, so hostile pages cannot grow the set.
const MAX_REFUSED_ORIGINS_LOGGED: usize = 64;

/// Serves `router` on `listener`, sweeping `state`'s store every
/// `sweep_interval` (and, with `STATE_FILE`, saving a snapshot every
/// minute), until `shutdown` completes; then stops accepting, lets
/// in-flight requests finish for up to [`DRAIN_TIMEOUT`], and saves a last
/// snapshot.
///
/// Connections are served under `state`'s [`server::Limits`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    sweep_interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let cancel = state.shutdown.clone();
    let sweeper = tokio::spawn(sweeper::run(
        state.store.clone(),
        state.limiter.clone(),
        sweep_interval,
        cancel.clone(),
    ));
    let sampler = tokio::spawn(sweeper::sample(
        state.store.clone(),
        state.clock.clone(),
        cancel.clone(),
    ));
    let limits = state.limits.clone();
    let snapshots = state.snapshots.clone();
    let snapshotter = snapshots
        .clone()
        .map(|s| tokio::spawn(store::memory::snapshot::run(s, cancel.clone())));
    let summary = tokio::spawn(telemetry::summarise(
        state.metrics.clone(),
        state.store.clone(),
        cancel.clone(),
    ));
    let publisher = tokio::spawn(sse::counts::run(
        state.streams.clone(),
        state.store.clone(),
        state.modules.clone(),
        cancel.clone(),
    ));
    // On Redis, changes made by any instance reach this one's presence
    // streams through the scripts' pub/sub messages.
    let changes = match &state.store {
        store::Store::Redis(redis) => Some(tokio::spawn(store::redis::changes::run(
            redis.clone(),
            cancel.clone(),
        ))),
        store::Store::Memory(_) => None,
    };
    let deliverers = match &state.webhooks {
        Some(w) => {
            webhooks::spawn_all(w, &state.clock, &state.metrics, &cancel).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot start webhook delivery: no HTTP client");
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    let signal = cancel.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {},
            () = signal.cancelled() => {},
        }
        // Open streams end now, so they do not hold up the drain.
        signal.cancel();
    };
    server::run(listener, router, &limits, DRAIN_TIMEOUT, shutdown).await;
    cancel.cancel();
    let _ = tokio::join!(sweeper, sampler, summary, publisher);
    // Before the last snapshot, so it holds what they did not send.
    for deliverer in deliverers {
        let _ = deliverer.await;
    }
    if let Some(changes) = changes {
        let _ = changes.await;
    }
    if let Some(snapshots) = snapshots {
        // After the periodic task has finished its last save, if any, so
        // the two never write at once; the outcome is logged by `save`.
        if let Some(task) = snapshotter {
            let _ = task.await;
        }
        // Bounded, so a hung disk cannot hang the shutdown.
        if tokio::time::timeout(DRAIN_TIMEOUT, snapshots.save())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "last snapshot not saved in time; exiting without it");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
