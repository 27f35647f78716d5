//! Checking a token: signature, algorithm, issuer and audience by the
//! `jsonwebtoken` crate; `exp` and `nbf` here, against the service's
//! [`Clock`], so tests expire a token by moving time; then the user and the
//! admin role from the claims.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::cache::VerifiedTokens;
use super::keys::KeySource;
use crate::clock::{Clock, duration_ms};
use crate::config::{ConfigError, JwtArgs};
use crate::domain::{Profile, ResourceId, UserId};

/// The verified identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// From the user claim.
    pub user: UserId,
    /// Whether the token carries the admin role.
    pub admin: bool,
    /// When the token expires (ms since the epoch), if it says.
    pub expires_at: Option<i64>,
    /// The `PROFILE_CLAIMS` the token carries, if any.
    pub profile: Option<Profile>,
    /// Whether the `JWT_HIDDEN_CLAIM` is `true`: counted, never listed.
    pub hidden: bool,
    /// The resources the `JWT_SCOPE_CLAIM` lets the caller watch.
    pub scope: Scope,
}

/// Resource patterns from the scope claim: exact ids, or prefixes ending
/// in `*` (`request:*`). A claim that is neither a string nor an array of
/// strings is no scope at all. Shared, so a cached caller clones cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Arc<[Box<str>]>>);

impl Scope {
    /// The scope a claim value gives: a string is one pattern, an array
    /// of strings is several, anything else (an array with a non-string
    /// among them included) is none.
    pub fn from_claim(value: Option<&Value>) -> Self {
        let patterns: Option<Vec<Box<str>>> = match value {
            Some(Value::String(s)) => Some(vec![s.as_str().into()]),
            Some(Value::Array(items)) => items.iter().map(|v| v.as_str().map(Into::into)).collect(),
            _ => None,
        };
        Self(patterns.filter(|p| !p.is_empty()).map(Into::into))
    }

    /// Whether a pattern matches `resource`.
    pub fn allows(&self, resource: &ResourceId) -> bool {
        let resource = resource.as_str();
        self.0
            .iter()
            .flat_map(|p| p.iter())
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => resource.starts_with(prefix),
                None => &**pattern == resource,
            })
    }

    /// The bytes the patterns take, for the token cache's weigher.
    pub(super) fn bytes(&self) -> usize {
        self.0
            .iter()
            .flat_map(|p| p.iter())
            .map(|p| p.len() + 16)
            .sum()
    }
}

/// Why a token was refused; every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (or `access_token` where allowed).
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not a well-formed JWT, bad signature, algorithm not allowed, wrong
    /// issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is still ahead.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// No `exp` while `JWT_REQUIRE_EXP=true`.
    #[error("token has no exp claim")]
    MissingExp,
    /// The user claim is absent, empty, too long or not a string/integer.
    #[error("token has no usable user id in claim `{0}`")]
    NoUser(String),
}

/// The longest token looked at; longer ones are refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks tokens; built once at start-up and shared.
pub struct Verifier {
    key: DecodingKey,
    verified: Option<VerifiedTokens>,
    validation: Validation,
    clock: Arc<dyn Clock>,
    leeway_s: i64,
    require_exp: bool,
    user_claim: String,
    admin_role: String,
    profile_claims: Vec<String>,
    hidden_claim: String,
    scope_claim: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `keys` with the token settings of `args`, remembering
    /// verified tokens in up to `cache_bytes` (0: verify every time).
    ///
    /// # Errors
    /// The key cannot be used (already checked by [`KeySource::load`],
    /// so only on an inconsistent hand-built `KeySource`).
    pub fn new(
        keys: &KeySource,
        args: &JwtArgs,
        clock: Arc<dyn Clock>,
        cache_bytes: u64,
    ) -> Result<Self, ConfigError> {
        let key = keys
            .decoding_key()
            .map_err(|e| ConfigError::new("JWT_PUBLIC_KEY_FILE", format!("unusable key: {e}")))?;
        let algorithms = if args.jwt_algorithms.is_empty() {
            match keys.family() {
                AlgorithmFamily::Hmac => vec![Algorithm::HS256],
                family => family.algorithms().to_vec(),
            }
        } else {
            args.jwt_algorithms.clone()
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        // Time claims are checked against our clock in `verify`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        if let Some(iss) = &args.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        if let Some(aud) = &args.jwt_audience {
            validation.set_audience(&[aud]);
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Self {
            key,
            verified: VerifiedTokens::new(cache_bytes),
            validation,
            clock,
            leeway_s: duration_ms(args.jwt_leeway) / 1000,
            require_exp: args.jwt_require_exp,
            user_claim: args.jwt_user_claim.clone(),
            admin_role: args.jwt_admin_role.clone(),
            profile_claims: args.profile_claims.0.clone(),
            hidden_claim: args.jwt_hidden_claim.clone(),
            scope_claim: args.jwt_scope_claim.clone(),
        })
    }

    /// Verifies `token` and says who it is. A token verified before is
    /// recognised by its exact bytes and only its expiry is checked again
    /// (see [`super::cache`]).
    ///
    /// # Errors
    /// Every reason of [`AuthError`].
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token longer than 8 KiB"));
        }
        let now_s = self.clock.now_ms().div_euclid(1000);
        let Some(verified) = &self.verified else {
            return self.verify_in_full(token, now_s);
        };
        if let Some(caller) = verified.get(token) {
            if caller
                .expires_at
                .is_some_and(|at| now_s > at.div_euclid(1000))
            {
                verified.forget(token);
                return Err(AuthError::Expired);
            }
            return Ok(caller);
        }
        let caller = self.verify_in_full(token, now_s)?;
        verified.remember(token, &caller);
        Ok(caller)
    }

    /// Tokens remembered as verified, and the bytes they are weighed at.
    #[cfg(test)]
    fn cached_tokens(&self) -> (usize, u64) {
        self.verified
            .as_ref()
            .map_or((0, 0), |v| (v.len(), v.bytes()))
    }

    /// Every check, on a token not seen before.
    fn verify_in_full(&self, token: &str, now_s: i64) -> Result<Caller, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "algorithm not allowed"
                }
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => "missing issuer",
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => "missing audience",
                _ => "malformed token",
            })
        })?;
        let claims = data.claims;
        let expires_at = match claims.get("exp") {
            Some(exp) => {
                let exp = numeric_date(exp).ok_or(AuthError::Invalid("exp is not a number"))?;
                if now_s > exp.saturating_add(self.leeway_s) {
                    return Err(AuthError::Expired);
                }
                Some(exp.saturating_add(self.leeway_s).saturating_mul(1000))
            }
            None if self.require_exp => return Err(AuthError::MissingExp),
            None => None,
        };
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(AuthError::Invalid("nbf is not a number"))?;
            if now_s < nbf.saturating_sub(self.leeway_s) {
                return Err(AuthError::NotYetValid);
            }
        }
        let user = self
            .user_id(&claims)
            .ok_or_else(|| AuthError::NoUser(self.user_claim.clone()))?;
        let admin = claims.get("role").and_then(Value::as_str) == Some(&self.admin_role)
            || claims
                .get("roles")
                .and_then(Value::as_array)
                .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(&self.admin_role)));
        // Read once here, and remembered with the token: a heartbeat
        // with a cached token parses nothing.
        let profile = Profile::build(self.profile_claims.iter().filter_map(|name| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(|v| (name.as_str(), v))
        }));
        Ok(Caller {
            user,
            admin,
            expires_at,
            profile,
            hidden: claims.get(&self.hidden_claim) == Some(&Value::Bool(true)),
            scope: Scope::from_claim(claims.get(&self.scope_claim)),
        })
    }

    fn user_id(&self, claims: &Map<String, Value>) -> Option<UserId> {
        let fallbacks: &[&str] = if self.user_claim == "sub" {
            &["sub", "userId", "id"]
        } else {
            &[]
        };
        let value = std::iter::once(self.user_claim.as_str())
            .chain(fallbacks.iter().copied())
            .find_map(|name| claims.get(name).filter(|v| !v.is_null()))?;
        match value {
            Value::String(s) => UserId::parse(s),
            Value::Number(n) if n.is_i64() || n.is_u64() => UserId::parse(&n.to_string()),
            _ => None,
        }
    }
}

/// A JWT NumericDate: whole seconds (fractions are truncated).
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            // Saturating float-to-int cast: out-of-range dates clamp.
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    /// The token settings alone, parsed as `presence serve` parses them.
    #[derive(Parser)]
    struct JwtOnly {
        #[command(flatten)]
        jwt: JwtArgs,
    }

    const SECRET: &str = "unit-test-secret-that-is-long-enough";

    /// A verifier for these token settings, remembering up to
    /// `cache_bytes`, on a clock at a fixed start.
    fn verifier(extra: &[&str], cache_bytes: u64) -> (Verifier, Arc<ManualClock>) {
        let mut argv = vec!["presence", "--jwt-secret", SECRET];
        argv.extend_from_slice(extra);
        let args = JwtOnly::try_parse_from(argv).unwrap().jwt;
        let keys = KeySource::load(&args).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-14T09:30:00Z").unwrap();
        let clock = Arc::new(ManualClock::new(start.into()));
        let verifier = Verifier::new(&keys, &args, clock.clone(), cache_bytes).unwrap();
        (verifier, clock)
    }

    fn sign(claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn now_s(clock: &ManualClock) -> i64 {
        clock.now_ms() / 1000
    }

    #[test]
    fn a_remembered_token_expires_at_the_same_instant_as_a_fresh_check() {
        let (cached, clock) = verifier(&[], 1 << 20);
        let (fresh, fresh_clock) = verifier(&[], 0);
        let token = sign(&json!({"sub": "7", "exp": now_s(&clock) + 60, "role": "admin"}));
        let first = cached.verify(&token).unwrap();
        assert_eq!(cached.cached_tokens().0, 1, "remembered");
        assert_eq!(
            cached.verify(&token).unwrap(),
            first,
            "a hit is the same caller"
        );
        assert!(first.admin);
        // Default leeway 30 s: valid through exp + 30 s, refused a second on.
        for step in [89, 1, 1] {
            clock.advance(Duration::from_secs(step));
            fresh_clock.advance(Duration::from_secs(step));
            assert_eq!(
                cached.verify(&token),
                fresh.verify(&token),
                "{} s after issue",
                now_s(&clock)
            );
        }
        assert_eq!(cached.verify(&token), Err(AuthError::Expired));
        assert_eq!(cached.cached_tokens().0, 0, "an expired token is forgotten");
    }

    #[test]
    fn only_the_exact_bytes_are_a_hit() {
        let (verifier, clock) = verifier(&[], 1 << 20);
        let token = sign(&json!({"sub": "7", "exp": now_s(&clock) + 60}));
        verifier.verify(&token).unwrap();
        let (head, signature) = token.rsplit_once('.').unwrap();
        let flipped = |s: &str, at: usize| {
            let mut bytes = s.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        };
        for tampered in [
            format!("{head}.{}", flipped(signature, signature.len() - 1)),
            format!("{head}.{}", flipped(signature, 0)),
            format!("{}.{signature}", flipped(head, head.len() - 2)),
            format!("{token}A"),
            token[..token.len() - 1].to_owned(),
        ] {
            assert!(
                matches!(verifier.verify(&tampered), Err(AuthError::Invalid(_))),
                "{tampered}"
            );
        }
        assert_eq!(verifier.cached_tokens().0, 1, "failures are not remembered");
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_evicted_tokens_still_verify() {
        let capacity = 8 * 1024;
        let (verifier, clock) = verifier(&[], capacity);
        let tokens: Vec<String> = (0..300)
            .map(|i| sign(&json!({"sub": format!("user-{i}"), "exp": now_s(&clock) + 600})))
            .collect();
        for _ in 0..2 {
            for (i, token) in tokens.iter().enumerate() {
                assert_eq!(
                    verifier.verify(token).unwrap().user.as_str(),
                    format!("user-{i}")
                );
            }
        }
        let (entries, bytes) = verifier.cached_tokens();
        assert!(bytes <= capacity, "{bytes} bytes held, capacity {capacity}");
        assert!(entries > 0 && entries < tokens.len(), "{entries} entries");
    }

    #[test]
    fn profile_hidden_and_scope_come_from_the_claims() {
        let (verifier, clock) = verifier(&[], 1 << 20);
        let exp = now_s(&clock) + 60;
        let long = "x".repeat(257);
        let caller = verifier
            .verify(&sign(
                &json!({"sub": "7", "exp": exp, "name": "Ann", "picture": long,
                "presence_hidden": true, "presence_scope": ["request:*", "doc:1"]}),
            ))
            .unwrap();
        assert_eq!(caller.profile.unwrap().as_json(), r#"{"name":"Ann"}"#);
        assert!(caller.hidden);
        let r = |s: &str| ResourceId::parse(s).unwrap();
        assert!(caller.scope.allows(&r("request:12")));
        assert!(caller.scope.allows(&r("doc:1")));
        assert!(!caller.scope.allows(&r("doc:12")));
        assert!(!caller.scope.allows(&r("contract:secret")));
        for (claims, why) in [
            (
                json!({"sub": "8", "exp": exp, "name": 5, "presence_hidden": "true", "presence_scope": 7}),
                "wrong types",
            ),
            (
                json!({"sub": "8", "exp": exp, "presence_scope": ["request:*", 1]}),
                "one non-string",
            ),
            (
                json!({"sub": "8", "exp": exp, "presence_scope": {"a": "b"}}),
                "an object",
            ),
        ] {
            let caller = verifier.verify(&sign(&claims)).unwrap();
            assert_eq!(caller.profile, None, "{why}");
            assert!(!caller.hidden, "{why}");
            assert_eq!(caller.scope, Scope::default(), "{why}");
            assert!(!caller.scope.allows(&r("request:1")), "{why}");
        }
        let scoped = verifier
            .verify(&sign(
                &json!({"sub": "9", "exp": exp, "presence_scope": "request:1"}),
            ))
            .unwrap();
        assert!(scoped.scope.allows(&r("request:1")) && !scoped.scope.allows(&r("request:10")));
    }

    #[test]
    fn tokens_without_exp_are_checked_every_time() {
        let (verifier, _) = verifier(&["--jwt-require-exp", "false"], 1 << 20);
        let token = sign(&json!({"sub": "7"}));
        assert_eq!(verifier.verify(&token).unwrap().expires_at, None);
        assert_eq!(
            verifier.cached_tokens().0,
            0,
            "never remembered without exp"
        );
    }

    #[test]
    fn with_no_cache_every_check_is_in_full() {
        let (verifier, clock) = verifier(&[], 0);
        let token = sign(&json!({"sub": "7", "exp": now_s(&clock) + 60}));
        verifier.verify(&token).unwrap();
        verifier.verify(&token).unwrap();
        assert_eq!(verifier.cached_tokens(), (0, 0));
    }
}
