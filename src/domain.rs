//! The service's vocabulary: modules, users, clients, pages and resources.
//!
//! Each type can only hold a valid value ("parse, don't validate"): once a
//! request has been turned into these types, nothing further down checks
//! lengths or character sets again, and the store never sees unbounded input.

use std::fmt;
use std::sync::Arc;

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
    /// Accepts a non-empty id of at most [`MAX_USER_ID_LEN`] bytes without
    /// control characters: an id reaches log lines and dashboards, where a
    /// newline would forge a line and an escape sequence drive a terminal.
    pub fn parse(s: &str) -> Option<Self> {
        ((1..=MAX_USER_ID_LEN).contains(&s.len()) && !s.chars().any(char::is_control))
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
}
