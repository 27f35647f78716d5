//! The service's vocabulary: modules, users, clients, pages and resources.
//!
//! Each type can only hold a valid value ("parse, don't validate"): once a
//! request has been turned into these types, nothing further down checks
//! lengths or character sets again, and the store never sees unbounded input.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest user id accepted from a token claim, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// The longest `clientId`, in characters of `[A-Za-z0-9_-]`.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// The longest `page`, in characters.
pub const MAX_PAGE_LEN: usize = 256;
/// The longest `resource`, in characters.
pub const MAX_RESOURCE_LEN: usize = 128;

/// One module of the product, as configured in `MODULES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDef {
    /// What clients send in a heartbeat, e.g. `pms`.
    pub code: String,
    /// What the stats report, e.g. `procurement`.
    pub stats_key: String,
}

/// The position of a module in the registry. Only a [`Modules`] hands these
/// out, so a `ModuleId` always names a configured module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(u8);

impl ModuleId {
    /// The registry index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The module registry, in configured order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules(Arc<[ModuleDef]>);

impl Modules {
    /// The most modules a registry may hold.
    pub const MAX: usize = 64;

    /// Parses `code:statsKey,code:statsKey`.
    ///
    /// # Errors
    /// A message saying what is wrong with the list, for the config error.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut defs: Vec<ModuleDef> = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((code, key)) = pair.split_once(':') else {
                return Err(format!("`{pair}` is not a code:statsKey pair"));
            };
            let (code, key) = (code.trim(), key.trim());
            for part in [code, key] {
                if !is_token(part, 64) {
                    return Err(format!("`{part}` must be 1 to 64 of [A-Za-z0-9_-]"));
                }
            }
            if key == "timestamp" {
                return Err("`timestamp` cannot be a stats key".into());
            }
            if defs.iter().any(|d| d.code == code || d.stats_key == key) {
                return Err(format!("`{pair}` repeats a code or stats key"));
            }
            defs.push(ModuleDef {
                code: code.to_owned(),
                stats_key: key.to_owned(),
            });
        }
        if defs.is_empty() {
            return Err("at least one code:statsKey pair is needed".into());
        }
        if defs.len() > Self::MAX {
            return Err(format!("at most {} modules", Self::MAX));
        }
        Ok(Self(defs.into()))
    }

    /// The module whose code is `code`.
    pub fn by_code(&self, code: &str) -> Option<ModuleId> {
        self.0
            .iter()
            .position(|d| d.code == code)
            .and_then(|i| u8::try_from(i).ok())
            .map(ModuleId)
    }

    /// The definition of `id`.
    pub fn get(&self, id: ModuleId) -> &ModuleDef {
        &self.0[id.index()]
    }

    /// Every module id, in registry order.
    pub fn ids(&self) -> impl Iterator<Item = ModuleId> + '_ {
        (0..self.0.len()).filter_map(|i| u8::try_from(i).ok().map(ModuleId))
    }

    /// How many modules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a registry has at least one module.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The codes, comma-separated, for error messages.
    pub fn codes(&self) -> String {
        self.0
            .iter()
            .map(|d| d.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for Modules {
    fn default() -> Self {
        // The contract's default registry; parsing a constant cannot fail.
        Self::parse("pms:procurement,ih:innovation").unwrap_or_else(|_| unreachable!())
    }
}

/// `s` is 1 to `max` of `[A-Za-z0-9_-]`.
fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A user id, from the token's user claim: 1 to 128 bytes, no control
    /// characters. The integer `42` and the string `"42"` are the same
    /// `UserId`.
    UserId
);
string_newtype!(
    /// One browser tab or device of a user: 1 to 64 of `[A-Za-z0-9_-]`.
    ClientId
);
string_newtype!(
    /// The route the user is on: 1 to 256 characters, no control characters.
    Page
);
string_newtype!(
    /// What the user is viewing, e.g. `request:123`: 1 to 128 characters,
    /// no control characters.
    ResourceId
);

impl UserId {
    /// Accepts a non-empty id of at most [`MAX_USER_ID_LEN`] bytes, not
    /// only whitespace, without control characters and without
    /// [`is_invisible_or_bidi`] ones: an id reaches log lines and
    /// dashboards, where a newline would forge a line, an escape sequence
    /// drive a terminal, and a zero-width or bidi character make one id
    /// look like another (or like nothing).
    pub fn parse(s: &str) -> Option<Self> {
        ((1..=MAX_USER_ID_LEN).contains(&s.len())
            && !s.chars().all(char::is_whitespace)
            && !s.chars().any(|c| c.is_control() || is_invisible_or_bidi(c)))
        .then(|| Self(s.into()))
    }

    /// A copy of an id that was parsed before and kept as a string (the
    /// memory store numbers users and keeps their ids in one arena).
    pub(crate) fn known(s: &str) -> Self {
        Self(s.into())
    }
}

impl ClientId {
    /// Accepts 1 to 64 of `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Option<Self> {
        is_token(s, MAX_CLIENT_ID_LEN).then(|| Self(s.into()))
    }
}

impl Page {
    /// Accepts 1 to 256 characters.
    pub fn parse(s: &str) -> Option<Self> {
        char_len_within(s, MAX_PAGE_LEN).then(|| Self(s.into()))
    }
}

impl ResourceId {
    /// Accepts 1 to 128 characters.
    pub fn parse(s: &str) -> Option<Self> {
        char_len_within(s, MAX_RESOURCE_LEN).then(|| Self(s.into()))
    }
}

/// `s` has between 1 and `max` characters (Unicode scalar values), none of
/// them a control character (they have no place in a route or an id, and
/// would end up in logs and dashboards).
fn char_len_within(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max * 4
        && s.chars().count() <= max
        && !s.chars().any(char::is_control)
}

/// Whether `c` is invisible or reorders the text around it: zero-width
/// (U+200B..U+200D, U+2060, U+FEFF), bidi marks (U+200E, U+200F, U+061C),
/// embeddings and overrides (U+202A..U+202E) and isolates
/// (U+2066..U+2069). Refused in user ids, stripped from profile values;
/// resource ids and pages keep them (see `docs/design.md`).
pub fn is_invisible_or_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{061C}'
    )
}

/// Whether a session's user is at the keyboard: the `state` of its latest
/// heartbeat (the browser client decides; the service only records it).
/// Ordered active first, so the `min` of several sessions' states is the
/// state of all of them together.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// Input lately, tab visible (the default).
    #[default]
    Active,
    /// No input for a while, or the tab hidden.
    Idle,
}

impl Activity {
    /// Accepts `active` or `idle`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "idle" => Some(Self::Idle),
            _ => None,
        }
    }

    /// `active` or `idle`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Idle => "idle",
        }
    }

    /// Whether this is [`Activity::Idle`].
    pub fn is_idle(self) -> bool {
        self == Self::Idle
    }
}

/// The longest profile claim value kept, in bytes; a longer one is left out.
pub const MAX_PROFILE_VALUE_BYTES: usize = 256;
/// The most a user's profile may take, as JSON text, in bytes.
pub const MAX_PROFILE_BYTES: usize = 1024;

/// What a user's token says about them (`PROFILE_CLAIMS`): string claims,
/// kept as the JSON object the API shows (`{"name":"Ann"}`), in one shared
/// allocation, so a heartbeat, a store and a response share it without
/// copying. Only [`Profile::build`] makes one, so a profile is always a
/// JSON object of strings, each at most [`MAX_PROFILE_VALUE_BYTES`], at
/// most [`MAX_PROFILE_BYTES`] in all.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Profile(Arc<str>);

impl Profile {
    /// The profile of `(claim, value)` pairs in the order given: a value
    /// over [`MAX_PROFILE_VALUE_BYTES`] is left out, and so is a pair that
    /// would take the whole past [`MAX_PROFILE_BYTES`]; a repeated claim
    /// keeps its first value. Control characters and
    /// [`is_invisible_or_bidi`] ones are removed from each value (a name
    /// must not break a line, hide text or reorder what follows it on a
    /// dashboard); a value left empty is left out. `None` when
    /// nothing is left.
    pub fn build<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut object = serde_json::Map::new();
        let mut bytes = 2; // the braces
        for (claim, value) in pairs {
            if value.len() > MAX_PROFILE_VALUE_BYTES || object.contains_key(claim) {
                continue;
            }
            let value = shown(value);
            if value.is_empty() {
                continue;
            }
            let value = value.as_ref();
            // Measured as written: key and value escaped and quoted, a colon,
            // and a comma after the first.
            let pair_bytes =
                json_len(claim) + json_len(value) + 1 + usize::from(!object.is_empty());
            if bytes + pair_bytes > MAX_PROFILE_BYTES {
                continue;
            }
            bytes += pair_bytes;
            object.insert(claim.to_owned(), serde_json::Value::from(value));
        }
        if object.is_empty() {
            return None;
        }
        let text = serde_json::Value::Object(object).to_string();
        Some(Self(text.into()))
    }

    /// A profile from its JSON text (as a store or snapshot kept it),
    /// checked again by [`Profile::build`]: anything else is `None`.
    pub fn from_json(text: &str) -> Option<Self> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        Self::build(
            object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
        )
    }

    /// [`Profile::from_json`] keeping only `claims` (the current
    /// `PROFILE_CLAIMS`, in their order): what was kept under other
    /// settings is never served under these.
    pub fn from_json_within(text: &str, claims: &[String]) -> Option<Self> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        Self::build(claims.iter().filter_map(|claim| {
            object
                .get(claim)
                .and_then(serde_json::Value::as_str)
                .map(|v| (claim.as_str(), v))
        }))
    }

    /// This profile with only `claims` (see [`Profile::from_json_within`]).
    pub fn within(&self, claims: &[String]) -> Option<Self> {
        Self::from_json_within(&self.0, claims)
    }

    /// The JSON object text, e.g. `{"name":"Ann"}`.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The profile as a JSON value, for a response.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value` without control and [`is_invisible_or_bidi`] characters,
/// borrowed when it has none.
fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| c.is_control() || is_invisible_or_bidi(c);
    if value.contains(hidden) {
        value
            .chars()
            .filter(|&c| !hidden(c))
            .collect::<String>()
            .into()
    } else {
        value.into()
    }
}

/// The length of `s` as a JSON string literal, quotes included.
fn json_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(usize::MAX / 4, |q| q.len())
}

/// A presence event's type (contract section 9), as `WEBHOOK_EVENTS`
/// names it and a webhook delivery sends it (`events::Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A user with no session starts one.
    #[serde(rename = "user.online")]
    UserOnline,
    /// A user's last session ends.
    #[serde(rename = "user.offline")]
    UserOffline,
    /// A user's first session in a module.
    #[serde(rename = "module.enter")]
    ModuleEnter,
    /// A user's last session in a module ends or moves away.
    #[serde(rename = "module.leave")]
    ModuleLeave,
    /// A user's first session on a resource.
    #[serde(rename = "resource.join")]
    ResourceJoin,
    /// A user's last session on a resource ends or moves away.
    #[serde(rename = "resource.leave")]
    ResourceLeave,
    /// A resource's first viewer.
    #[serde(rename = "resource.occupied")]
    ResourceOccupied,
    /// A resource's last viewer left.
    #[serde(rename = "resource.vacated")]
    ResourceVacated,
    /// A user's state turned active or idle.
    #[serde(rename = "user.state")]
    UserState,
}

impl EventKind {
    /// Every type, in the contract's order.
    pub const ALL: [Self; 9] = [
        Self::UserOnline,
        Self::UserOffline,
        Self::ModuleEnter,
        Self::ModuleLeave,
        Self::ResourceJoin,
        Self::ResourceLeave,
        Self::ResourceOccupied,
        Self::ResourceVacated,
        Self::UserState,
    ];

    /// The type as the contract names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserOnline => "user.online",
            Self::UserOffline => "user.offline",
            Self::ModuleEnter => "module.enter",
            Self::ModuleLeave => "module.leave",
            Self::ResourceJoin => "resource.join",
            Self::ResourceLeave => "resource.leave",
            Self::ResourceOccupied => "resource.occupied",
            Self::ResourceVacated => "resource.vacated",
            Self::UserState => "user.state",
        }
    }

    /// The type named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The event that cancels this leave-type event within the leave
    /// grace; `None` for the others.
    pub const fn counterpart(self) -> Option<Self> {
        match self {
            Self::UserOffline => Some(Self::UserOnline),
            Self::ModuleLeave => Some(Self::ModuleEnter),
            Self::ResourceLeave => Some(Self::ResourceJoin),
            Self::ResourceVacated => Some(Self::ResourceOccupied),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_registry_is_the_contracts() {
        let modules = Modules::default();
        let pms = modules.by_code("pms").unwrap();
        let ih = modules.by_code("ih").unwrap();
        assert_eq!(modules.get(pms).stats_key, "procurement");
        assert_eq!(modules.get(ih).stats_key, "innovation");
        assert_eq!(modules.by_code("procurement"), None);
    }

    #[test]
    fn registry_rejects_bad_lists() {
        for bad in [
            "",
            "pms",
            "pms:",
            "pms:a,pms:b",
            "a:x,b:x",
            "a b:c",
            "t:timestamp",
        ] {
            assert!(Modules::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn client_id_allows_only_its_alphabet_and_length() {
        assert!(ClientId::parse("tab-1_A").is_some());
        assert!(ClientId::parse(&"a".repeat(64)).is_some());
        assert!(ClientId::parse(&"a".repeat(65)).is_none());
        assert!(ClientId::parse("").is_none());
        assert!(ClientId::parse("tab 1").is_none());
        assert!(ClientId::parse("tab/1").is_none());
    }

    #[test]
    fn page_and_resource_count_characters_not_bytes() {
        assert!(Page::parse(&"é".repeat(256)).is_some());
        assert!(Page::parse(&"é".repeat(257)).is_none());
        assert!(ResourceId::parse(&"x".repeat(128)).is_some());
        assert!(ResourceId::parse(&"x".repeat(129)).is_none());
        assert!(ResourceId::parse("").is_none());
        assert!(ResourceId::parse("request:\u{0}1").is_none());
        assert!(Page::parse("/a\nb").is_none());
    }
    #[test]
    fn activity_is_active_or_idle_and_nothing_else() {
        assert_eq!(Activity::parse("active"), Some(Activity::Active));
        assert_eq!(Activity::parse("idle"), Some(Activity::Idle));
        for bad in ["", "Idle", "away", "offline"] {
            assert_eq!(Activity::parse(bad), None, "{bad}");
        }
        assert_eq!(Activity::default(), Activity::Active);
    }

    #[test]
    fn a_profile_leaves_out_long_values_and_stays_within_1_kib() {
        let p = Profile::build([("name", "Ann"), ("picture", "https://x/a.png")]).unwrap();
        assert_eq!(p.as_json(), r#"{"name":"Ann","picture":"https://x/a.png"}"#);
        let long = "x".repeat(MAX_PROFILE_VALUE_BYTES + 1);
        let p = Profile::build([("name", long.as_str()), ("title", "Dr")]).unwrap();
        assert_eq!(p.as_json(), r#"{"title":"Dr"}"#);
        assert_eq!(Profile::build([("name", long.as_str())]), None);
        let full = "y".repeat(MAX_PROFILE_VALUE_BYTES);
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let p = Profile::build(names.iter().map(|n| (n.as_str(), full.as_str()))).unwrap();
        assert!(
            p.as_json().len() <= MAX_PROFILE_BYTES,
            "{}",
            p.as_json().len()
        );
        assert_eq!(p.to_value().as_object().unwrap().len(), 3);
        assert_eq!(Profile::from_json(p.as_json()), Some(p));
        assert_eq!(Profile::from_json("[1]"), None);
        assert_eq!(Profile::from_json(r#"{"name":1}"#), None);
    }

    #[test]
    fn user_ids_refuse_only_whitespace_and_invisible_or_bidi_characters() {
        for bad in [
            " ",
            "\t",
            "\u{3000}",
            "a\u{200b}",
            "a\u{200c}",
            "a\u{200d}",
            "a\u{2060}",
            "\u{feff}a",
            "a\u{202a}",
            "a\u{202e}",
            "a\u{2066}",
            "a\u{2069}",
            "a\u{200e}",
            "a\u{200f}",
            "a\u{61c}",
        ] {
            assert_eq!(UserId::parse(bad), None, "{bad:?}");
        }
        for good in ["a", "Ann Lee", " a", "山田", "Zoë"] {
            assert!(UserId::parse(good).is_some(), "{good:?}");
        }
    }

    #[test]
    fn profile_values_lose_control_zero_width_and_bidi_characters() {
        let p = Profile::build([
            (
                "name",
                "A\u{202e}n\u{200b}n\u{2066}\u{2069}\u{61c}\u{200e}\u{feff}\u{2060}\n",
            ),
            ("title", "\u{200d}\u{202c}"),
            ("picture", "https://x/a.png"),
        ])
        .unwrap();
        assert_eq!(p.as_json(), r#"{"name":"Ann","picture":"https://x/a.png"}"#);
        let text = r#"{"name":"A\u202en\u0007n"}"#;
        assert_eq!(
            Profile::from_json(text).unwrap().as_json(),
            r#"{"name":"Ann"}"#
        );
    }
}
