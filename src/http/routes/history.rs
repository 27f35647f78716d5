//! `GET /api/admin/history?window=1h`: time series and analytics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::rfc3339;
use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody, truncate};
use crate::http::extract::AdminUser;
use crate::http::extract::ApiQuery;
use crate::http::state::AppState;
use crate::metrics::module_share;
use crate::store::SessionStore;
use crate::store::history::History;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history_get))
}

/// The window to report on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// From `1m` to `24h` (humantime, e.g. `90m`, `6h`); default `1h`.
    /// The pattern gives the usual shapes; any humantime in range is
    /// accepted.
    #[param(
        pattern = "^([1-9]|1[0-9]|2[0-4])h$|^([1-9]|[1-5][0-9])m$",
        example = "6h"
    )]
    window: Option<String>,
}

/// One minute's sample.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Sample {
    at: String,
    active_now: u64,
}

/// The highest `activeNow` in the window, and when it was first reached.
#[derive(Debug, Serialize, ToSchema)]
struct Peak {
    value: u64,
    /// Null when nobody was active in the window.
    at: Option<String>,
}

/// One module over the window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ModuleHistory {
    /// One a minute, oldest first.
    samples: Vec<Sample>,
    peak_concurrent: Peak,
    /// Of sessions that ended (left, moved away or expired) in the window;
    /// null when none did.
    average_session_seconds: Option<f64>,
    sessions_started: u64,
}

/// Time series and analytics of every module.
#[derive(Debug, Serialize, ToSchema)]
struct HistoryResponse {
    /// As asked, e.g. `1h`.
    window: String,
    /// By stats key, in registry order.
    modules: IndexMap<String, ModuleHistory>,
    /// Each module's share of the users active now (all 0 when nobody is).
    distribution: IndexMap<String, f64>,
    timestamp: String,
}

/// Per-minute samples, peak, average session length and sessions started
/// for each module over a window, and the module distribution now.
#[utoipa::path(
    get,
    path = "/api/admin/history",
    tag = "admin",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "History of every module", body = HistoryResponse),
        (status = 400, description = "`invalid_query`: window outside 1m to 24h", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn history_get(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let window = query.window.unwrap_or_else(|| "1h".to_owned());
    let minutes = parse_window(&window)?;
    let history = within_deadline(&state.metrics, "history", state.store.history(minutes)).await?;
    let counts =
        within_deadline(&state.metrics, "module_counts", state.store.module_counts()).await?;
    let total_active: u64 = counts.counts.iter().map(|c| c.active_now).sum();
    let mut modules = IndexMap::new();
    let mut distribution = IndexMap::new();
    for (id, now) in state.modules.ids().zip(&counts.counts) {
        let key = state.modules.get(id).stats_key.clone();
        modules.insert(key.clone(), summarise(&history, id.index()));
        distribution.insert(key, module_share(now.active_now, total_active));
    }
    Ok(Json(HistoryResponse {
        window,
        modules,
        distribution,
        timestamp: rfc3339(history.at),
    }))
}

/// Whole minutes of a `1m`..`24h` window (a partial minute counts as one).
fn parse_window(window: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::InvalidQuery(format!(
            "window must be a duration from 1m to 24h, like 1h or 30m, not `{}`",
            truncate(window)
        ))
    };
    let d = humantime::parse_duration(window.trim()).map_err(|_| bad())?;
    if d < Duration::from_secs(60) || d > Duration::from_secs(24 * 3600) {
        return Err(bad());
    }
    i64::try_from(d.as_secs().div_ceil(60)).map_err(|_| bad())
}

fn summarise(history: &History, m: usize) -> ModuleHistory {
    let minutes = || history.minutes.iter().map(|b| (b.start, &b.modules[m]));
    let samples = minutes()
        .filter_map(|(start, mm)| {
            mm.sample.map(|n| Sample {
                at: rfc3339(start),
                active_now: n,
            })
        })
        .collect();
    let peak = minutes()
        .filter_map(|(_, mm)| mm.peak_at.map(|at| (mm.peak, at)))
        .fold(None, |best: Option<(u64, i64)>, (value, at)| match best {
            Some((v, a)) if v > value || (v == value && a <= at) => Some((v, a)),
            _ => Some((value, at)),
        });
    // Sums saturate: a value no minute can hold (a hand-edited snapshot, a
    // Redis hash written by someone else) must not wrap a total around.
    let (ended, ended_ms) = minutes().fold((0u64, 0u64), |(n, ms), (_, mm)| {
        (n.saturating_add(mm.ended), ms.saturating_add(mm.ended_ms))
    });
    #[allow(clippy::cast_precision_loss, reason = "totals are far below 2^52")]
    let average = (ended > 0).then(|| ended_ms as f64 / ended as f64 / 1000.0);
    ModuleHistory {
        samples,
        peak_concurrent: Peak {
            value: peak.map_or(0, |(v, _)| v),
            at: peak.map(|(_, at)| rfc3339(at)),
        },
        average_session_seconds: average,
        sessions_started: minutes().fold(0, |n, (_, mm)| n.saturating_add(mm.started)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_run_from_one_minute_to_a_day() {
        assert_eq!(parse_window("1m").ok(), Some(1));
        assert_eq!(parse_window("90s").ok(), Some(2));
        assert_eq!(parse_window("24h").ok(), Some(1440));
        for bad in ["", "59s", "25h", "1d 1m", "soon", "-1h"] {
            assert_eq!(
                parse_window(bad).map_err(|e| e.code()),
                Err("invalid_query"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        use crate::store::history::{MinuteBucket, ModuleMinute};
        let huge = ModuleMinute {
            sample: Some(u64::MAX),
            peak: u64::MAX,
            peak_at: Some(0),
            started: u64::MAX,
            ended: u64::MAX,
            ended_ms: u64::MAX,
        };
        let history = History {
            minutes: vec![
                MinuteBucket {
                    start: 0,
                    modules: vec![huge],
                },
                MinuteBucket {
                    start: 60_000,
                    modules: vec![huge],
                },
            ],
            at: 120_000,
        };
        let summary = summarise(&history, 0);
        assert_eq!(summary.sessions_started, u64::MAX);
        assert_eq!(summary.peak_concurrent.value, u64::MAX);
    }
}
