//! What a snapshot file holds: the versioned JSON format ([`Snapshot`] and
//! its entries), written from a `MemoryImage` by [`encode`] and read back
//! by [`decode`], which checks every value against today's rules and
//! notes in a `Dropped` what it had to leave out.
//!
//! The field names are the format: "Snapshot format" in `docs/design.md`
//! says what each holds and how the format evolves.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::Unusable;
use super::dropped::Dropped;
use crate::clock::Millis;
use crate::domain::{Activity, ClientId, ModuleId, Modules, Page, Profile, ResourceId, UserId};
use crate::store::SessionInfo;
use crate::store::history::{MinuteBucket, ModuleMinute};
use crate::store::memory::{MemoryImage, SessionImage, UserImage};
use crate::webhooks::MemoryLog;

/// The format version written.
pub(super) const FORMAT_VERSION: u32 = 2;

/// The oldest version read: version 1 had no `state` per session and no
/// `users`; its sessions are restored as active.
pub(super) const OLDEST_VERSION_READ: u32 = 1;

/// The latest instant a snapshot may name: 9999-12-31T23:59:59.999Z, the
/// last one RFC 3339 can write. Times run from the epoch to it.
const MAX_TIME: Millis = 253_402_300_799_999;

/// The most a minute may count of anything (sessions started or ended, a
/// sample, a peak): 2^32 - 1, far above any real minute and far enough
/// below `u64::MAX` that 24 hours of them add up without overflow.
const MAX_COUNT: u64 = u32::MAX as u64;

/// The most a minute's ended sessions may add up to, in milliseconds:
/// 2^53, the largest integer every JSON reader keeps exact.
const MAX_ENDED_MS: u64 = 1 << 53;

/// `image` as the bytes of a snapshot file of the current version.
pub(super) fn encode(image: MemoryImage, modules: &Modules) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Snapshot::from_image(image, modules))
}

/// The image a snapshot file describes for the configured `modules`, and
/// what of it they no longer accept.
pub(super) fn decode(bytes: &[u8], modules: &Modules) -> Result<(MemoryImage, Dropped), Unusable> {
    /// What every version has, asked first.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let Versioned { version } = serde_json::from_slice(bytes).map_err(Unusable::Corrupt)?;
    if !(OLDEST_VERSION_READ..=FORMAT_VERSION).contains(&version) {
        return Err(Unusable::Version(version));
    }
    let file: Snapshot = serde_json::from_slice(bytes).map_err(Unusable::Corrupt)?;
    Ok(file.into_image(modules))
}

/// The file, version 2 (and version 1, which lacks `state` and `users`:
/// their defaults migrate it). The field names are the format: see
/// "Snapshot format" in `docs/design.md` before changing any.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    version: u32,
    saved_at: Millis,
    today_start: Millis,
    sessions: Vec<SessionEntry>,
    today: IndexMap<String, Vec<String>>,
    total: IndexMap<String, Vec<String>>,
    history: Vec<MinuteV1>,
    /// Since version 2: what is kept per user.
    #[serde(default)]
    users: Vec<UserEntry>,
    /// With webhooks: events waiting for delivery and each endpoint's
    /// cursor (absent before webhooks, and when they are off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhooks: Option<MemoryLog>,
}

/// One user's entry (version 2).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserEntry {
    user_id: String,
    #[serde(default)]
    last_seen: Option<Millis>,
    #[serde(default)]
    profile: Option<serde_json::Value>,
    #[serde(default)]
    hidden: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionEntry {
    user_id: String,
    client_id: Option<String>,
    module: String,
    page: Option<String>,
    resource: Option<String>,
    started_at: Millis,
    resource_since: Millis,
    last_seen: Millis,
    /// Since version 2: `active` or `idle`; absent (version 1) is active.
    #[serde(default)]
    state: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MinuteV1 {
    start: Millis,
    modules: IndexMap<String, ModuleMinuteV1>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleMinuteV1 {
    sample: Option<u64>,
    peak: u64,
    peak_at: Option<Millis>,
    started: u64,
    ended: u64,
    ended_ms: u64,
}

impl Snapshot {
    fn from_image(image: MemoryImage, modules: &Modules) -> Self {
        let code = |m: ModuleId| modules.get(m).code.clone();
        let by_code = |sets: Vec<Vec<UserId>>| -> IndexMap<String, Vec<String>> {
            modules
                .ids()
                .zip(sets)
                .map(|(m, users)| (code(m), users.iter().map(|u| u.to_string()).collect()))
                .collect()
        };
        let text = |s: Option<&str>| s.map(str::to_owned);
        Self {
            version: FORMAT_VERSION,
            saved_at: image.at,
            today_start: image.today_start,
            sessions: image
                .sessions
                .iter()
                .map(
                    |SessionImage {
                         info: s,
                         resource_since,
                     }| SessionEntry {
                        user_id: s.user.to_string(),
                        client_id: text(s.client.as_ref().map(ClientId::as_str)),
                        module: code(s.module),
                        page: text(s.page.as_ref().map(Page::as_str)),
                        resource: text(s.resource.as_ref().map(ResourceId::as_str)),
                        started_at: s.started_at,
                        resource_since: *resource_since,
                        last_seen: s.last_seen,
                        state: Some(s.state.as_str().to_owned()),
                    },
                )
                .collect(),
            users: image
                .users
                .into_iter()
                .map(|u| UserEntry {
                    user_id: u.user.to_string(),
                    last_seen: u.last_seen,
                    profile: u.profile.as_ref().map(Profile::to_value),
                    hidden: u.hidden,
                })
                .collect(),
            webhooks: image.webhooks,
            today: by_code(image.today),
            total: by_code(image.total),
            history: image
                .history
                .into_iter()
                .map(|bucket| MinuteV1 {
                    start: bucket.start,
                    modules: modules
                        .ids()
                        .zip(bucket.modules)
                        .filter(|(_, minute)| *minute != ModuleMinute::default())
                        .map(|(m, minute)| (code(m), minute.into()))
                        .collect(),
                })
                .collect(),
        }
    }

    /// The image this file describes for the configured `modules`, leaving
    /// out what they no longer accept.
    fn into_image(self, modules: &Modules) -> (MemoryImage, Dropped) {
        let mut dropped = Dropped::default();
        let sessions = self
            .sessions
            .into_iter()
            .filter_map(|s| s.into_image(modules, &mut dropped))
            .collect();
        let today = users_by_module(self.today, modules, &mut dropped);
        let total = users_by_module(self.total, modules, &mut dropped);
        let history = self
            .history
            .into_iter()
            .map(|minute| {
                let mut bucket = MinuteBucket {
                    start: minute.start,
                    modules: vec![ModuleMinute::default(); modules.len()],
                };
                for (code, module_minute) in minute.modules {
                    if let Some(m) = dropped.module(modules, &code) {
                        if time_ok(minute.start) && module_minute.within_bounds() {
                            bucket.modules[m.index()] = module_minute.into();
                        } else {
                            dropped.invalid += 1;
                        }
                    }
                }
                bucket
            })
            .collect();
        let users = self
            .users
            .into_iter()
            .filter_map(|u| {
                let user = u.into_image();
                dropped.invalid += usize::from(user.is_none());
                user
            })
            .collect();
        let image = MemoryImage {
            at: self.saved_at,
            today_start: self.today_start,
            sessions,
            today,
            total,
            history,
            users,
            webhooks: self.webhooks,
        };
        (image, dropped)
    }
}

impl SessionEntry {
    fn into_image(self, modules: &Modules, dropped: &mut Dropped) -> Option<SessionImage> {
        let module = dropped.module(modules, &self.module)?;
        let session = (|| {
            let times = [self.started_at, self.resource_since, self.last_seen];
            if !times.into_iter().all(time_ok) {
                return None;
            }
            Some(SessionImage {
                info: SessionInfo {
                    user: UserId::parse(&self.user_id)?,
                    client: optional(self.client_id.as_deref(), ClientId::parse)?,
                    module,
                    page: optional(self.page.as_deref(), Page::parse)?,
                    resource: optional(self.resource.as_deref(), ResourceId::parse)?,
                    state: optional(self.state.as_deref(), Activity::parse)?.unwrap_or_default(),
                    started_at: self.started_at,
                    last_seen: self.last_seen,
                },
                resource_since: self.resource_since,
            })
        })();
        dropped.invalid += usize::from(session.is_none());
        session
    }
}

impl UserEntry {
    /// The user as the store keeps them, or `None` when a value is one
    /// today's rules refuse.
    fn into_image(self) -> Option<UserImage> {
        let profile = match self.profile {
            None => None,
            Some(value) => Some(Profile::from_json(&value.to_string())?),
        };
        if !self.last_seen.is_none_or(time_ok) {
            return None;
        }
        Some(UserImage {
            user: UserId::parse(&self.user_id)?,
            last_seen: self.last_seen,
            profile,
            hidden: self.hidden,
        })
    }
}

/// Whether `t` is an instant a snapshot may name: from the epoch to
/// [`MAX_TIME`].
fn time_ok(t: Millis) -> bool {
    (0..=MAX_TIME).contains(&t)
}

impl ModuleMinuteV1 {
    /// Whether every value is one a minute can hold.
    fn within_bounds(&self) -> bool {
        let counts = [self.peak, self.started, self.ended];
        counts
            .into_iter()
            .chain(self.sample)
            .all(|n| n <= MAX_COUNT)
            && self.ended_ms <= MAX_ENDED_MS
            && self.peak_at.is_none_or(time_ok)
    }
}

/// `Some(None)` for no value, `Some(Some(_))` for a valid one, `None` for
/// an invalid one.
fn optional<T>(value: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => parse(v).map(Some),
    }
}

fn users_by_module(
    sets: IndexMap<String, Vec<String>>,
    modules: &Modules,
    dropped: &mut Dropped,
) -> Vec<Vec<UserId>> {
    let mut by_module = vec![Vec::new(); modules.len()];
    for (code, users) in sets {
        let Some(m) = dropped.module(modules, &code) else {
            continue;
        };
        for user in users {
            match UserId::parse(&user) {
                Some(user) => by_module[m.index()].push(user),
                None => dropped.invalid += 1,
            }
        }
    }
    by_module
}

impl From<ModuleMinute> for ModuleMinuteV1 {
    fn from(m: ModuleMinute) -> Self {
        Self {
            sample: m.sample,
            peak: m.peak,
            peak_at: m.peak_at,
            started: m.started,
            ended: m.ended,
            ended_ms: m.ended_ms,
        }
    }
}

impl From<ModuleMinuteV1> for ModuleMinute {
    fn from(m: ModuleMinuteV1) -> Self {
        Self {
            sample: m.sample,
            peak: m.peak,
            peak_at: m.peak_at,
            started: m.started,
            ended: m.ended,
            ended_ms: m.ended_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Kind, Reason};
    use crate::webhooks::StreamId;

    fn modules(spec: &str) -> Modules {
        Modules::parse(spec).expect("registry")
    }

    #[test]
    fn a_file_round_trips_through_the_format() {
        let registry = modules("pms:procurement,ih:innovation");
        let pms = registry.by_code("pms").expect("pms");
        let user = |s: &str| UserId::parse(s).expect("user");
        let image = MemoryImage {
            at: 1_000,
            today_start: 500,
            sessions: vec![SessionImage {
                info: SessionInfo {
                    user: user("42"),
                    client: ClientId::parse("tab-1"),
                    module: pms,
                    page: Page::parse("/requests/1"),
                    resource: ResourceId::parse("request:1"),
                    state: Activity::Idle,
                    started_at: 600,
                    last_seen: 900,
                },
                resource_since: 700,
            }],
            today: vec![vec![user("42")], vec![]],
            total: vec![vec![user("42")], vec![user("7")]],
            history: vec![MinuteBucket {
                start: 0,
                modules: vec![
                    ModuleMinute {
                        sample: Some(1),
                        peak: 1,
                        peak_at: Some(30),
                        started: 1,
                        ended: 0,
                        ended_ms: 0,
                    },
                    ModuleMinute::default(),
                ],
            }],
            users: vec![UserImage {
                user: user("42"),
                last_seen: Some(900),
                profile: Profile::build([("name", "Ann")]),
                hidden: true,
            }],
            webhooks: Some(MemoryLog {
                endpoints: vec![("a1b2".into(), StreamId { ms: 900, seq: 0 })],
                entries: [(
                    StreamId { ms: 950, seq: 1 },
                    Event {
                        kind: Kind::ResourceLeave,
                        at: 950,
                        user: "42".into(),
                        module: Some("pms".into()),
                        resource: Some("request:1".into()),
                        reason: Some(Reason::Expired),
                        state: None,
                        hidden: true,
                    },
                )]
                .into(),
                last: StreamId { ms: 950, seq: 1 },
                dropped: 3,
                max: 0,
            }),
        };
        let bytes = encode(image.clone(), &registry).expect("encode");
        let (back, dropped) = decode(&bytes, &registry).expect("decode");
        assert_eq!(back, image);
        assert!(dropped.unknown_modules.is_empty() && dropped.invalid == 0);
    }

    #[test]
    fn entries_of_unknown_modules_or_with_invalid_values_are_dropped() {
        let json = br#"{"version":1,"savedAt":0,"todayStart":0,
            "sessions":[
              {"userId":"1","clientId":null,"module":"gone","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0},
              {"userId":"2","clientId":"bad id","module":"pms","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0},
              {"userId":"3","clientId":null,"module":"pms","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0}],
            "today":{"pms":["1",""],"gone":["9"]},"total":{"pms":["1"]},"history":[]}"#;
        let (image, dropped) = decode(json, &modules("pms:procurement")).expect("decode");
        assert_eq!(image.sessions.len(), 1);
        assert_eq!(image.sessions[0].info.user.as_str(), "3");
        assert_eq!(
            image.sessions[0].info.state,
            Activity::Active,
            "version 1 had no state: active"
        );
        assert_eq!(image.today, vec![vec![UserId::parse("1").expect("user")]]);
        assert_eq!(
            dropped.unknown_modules.into_iter().collect::<Vec<_>>(),
            ["gone"]
        );
        assert_eq!(dropped.invalid, 2, "the bad client id and the empty user");
    }

    #[test]
    fn another_version_or_shape_is_unusable() {
        let registry = modules("pms:procurement");
        assert!(matches!(
            decode(br#"{"version":3,"anything":"else"}"#, &registry),
            Err(Unusable::Version(3))
        ));
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"version\":1}",
            b"{\"version\":1,",
        ] {
            assert!(
                matches!(decode(bad, &registry), Err(Unusable::Corrupt(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
