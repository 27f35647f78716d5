//! The response bodies that more than one route or stream sends: module
//! counts (`GET /api/stats/modules` and each `modules` event) and the
//! viewers of a resource (`GET /api/presence/resources/{resource}` and each
//! `presence` event).

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::domain::{Modules, Profile, ResourceId};
use crate::store::{CountsAt, ModuleCounts, ResourceViewers};

/// The counts of one module.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ModuleCountsBody {
    /// Distinct users ever seen in the module.
    pub total_users: u64,
    /// Distinct users with a live session in the module now, active or idle.
    pub active_now: u64,
    /// Of `activeNow`, the users all of whose live sessions in the module
    /// are idle.
    pub idle_now: u64,
    /// Distinct users seen since 00:00 in `STATS_TIMEZONE`.
    pub today: u64,
}

impl From<ModuleCounts> for ModuleCountsBody {
    fn from(c: ModuleCounts) -> Self {
        Self {
            total_users: c.total_users,
            active_now: c.active_now,
            idle_now: c.idle_now,
            today: c.today,
        }
    }
}

/// One key per configured module (its stats key), in registry order, then
/// `timestamp`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "procurement": {"totalUsers": 2, "activeNow": 1, "idleNow": 0, "today": 1},
    "innovation": {"totalUsers": 1, "activeNow": 1, "idleNow": 1, "today": 1},
    "timestamp": "2026-01-14T09:30:00.123Z"
}))]
pub(crate) struct ModulesResponse {
    /// Counts per stats key.
    #[serde(flatten)]
    pub modules: IndexMap<String, ModuleCountsBody>,
    /// When the counts were taken.
    pub timestamp: String,
}

impl ModulesResponse {
    /// Labels counts with the registry's stats keys.
    pub(crate) fn new(registry: &Modules, counts: &CountsAt) -> Self {
        let modules = registry
            .ids()
            .zip(&counts.counts)
            .map(|(id, counts)| (registry.get(id).stats_key.clone(), (*counts).into()))
            .collect();
        Self {
            modules,
            timestamp: rfc3339(counts.at),
        }
    }
}

/// One user viewing the resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ViewerBody {
    /// Who.
    user_id: String,
    /// `active` if any of the user's live sessions on it is, else `idle`.
    #[schema(example = "active")]
    state: &'static str,
    /// Since when (earliest of the user's sessions on it).
    since: String,
    /// Latest heartbeat naming it.
    last_seen: String,
    /// The `PROFILE_CLAIMS` of the user's latest token; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"name": "Ann Lee"}))]
    profile: Option<Value>,
}

/// The live viewers of a resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceViewersResponse {
    /// As requested.
    #[schema(example = "request:123")]
    resource: String,
    /// Every visible viewer, listed or not.
    count: u64,
    /// One entry per visible user, earliest `since` first, at most 100.
    viewers: Vec<ViewerBody>,
    /// When the list was taken.
    timestamp: String,
}

impl ResourceViewersResponse {
    /// The answer for `resource` from what the store `found`: the body of
    /// the GET and of each presence stream event.
    pub(crate) fn new(resource: &ResourceId, found: ResourceViewers) -> Self {
        Self {
            resource: resource.to_string(),
            count: found.count,
            viewers: found
                .viewers
                .into_iter()
                .map(|v| ViewerBody {
                    user_id: v.user.to_string(),
                    state: v.state.as_str(),
                    since: rfc3339(v.since),
                    last_seen: rfc3339(v.last_seen),
                    profile: v.profile.as_ref().map(Profile::to_value),
                })
                .collect(),
            timestamp: rfc3339(found.at),
        }
    }
}
