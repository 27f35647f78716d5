//! Minting tokens: `presence token` and the demo-mode token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::keys::KeySource;
use crate::clock::duration_ms;
use crate::config::JwtArgs;

/// Why no token could be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The service checks tokens with a public key; minting needs the
    /// private key, which lives with the product's backend.
    #[error(
        "JWT_PUBLIC_KEY_FILE is configured: tokens must be signed by the holder of the private key"
    )]
    NoSecret,
    /// The signing library failed.
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs an HMAC token (the first of `JWT_ALGORITHMS`, else HS256) for
/// `user` valid for `ttl` from `now_ms`, with the issuer, audience and user
/// claim the service is configured to expect, and a `name` claim when given
/// (shown in the user's profile with the default `PROFILE_CLAIMS`).
///
/// # Errors
/// [`MintError::NoSecret`] when the key is not an HMAC secret.
pub fn mint(
    keys: &KeySource,
    args: &JwtArgs,
    user: &str,
    role: Option<&str>,
    name: Option<&str>,
    ttl: Duration,
    now_ms: i64,
) -> Result<String, MintError> {
    let secret = keys.secret().ok_or(MintError::NoSecret)?;
    let now = now_ms / 1000;
    let mut claims = Map::new();
    // An all-digit id becomes a JSON integer, as the product's backend sends.
    let id = user
        .parse::<u64>()
        .map_or_else(|_| json!(user), |n| json!(n));
    claims.insert(args.jwt_user_claim.clone(), id);
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + duration_ms(ttl) / 1000));
    if let Some(role) = role {
        claims.insert("role".into(), json!(role));
    }
    if let Some(name) = name {
        claims.insert("name".into(), json!(name));
    }
    if let Some(iss) = &args.jwt_issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &args.jwt_audience {
        claims.insert("aud".into(), json!(aud));
    }
    let key = EncodingKey::from_secret(secret.expose())?;
    Ok(jsonwebtoken::encode(
        &Header::new(
            args.jwt_algorithms
                .first()
                .copied()
                .unwrap_or(Algorithm::HS256),
        ),
        &Value::Object(claims),
        &key,
    )?)
}

/// What demo mode needs to mint tokens: the random key it signs with and
/// the claims the service expects. Exists only when no key is configured.
#[derive(Debug)]
pub struct DemoKeys {
    /// The random demo key.
    pub keys: KeySource,
    /// Issuer, audience and user claim to put in tokens.
    pub jwt: JwtArgs,
}

impl DemoKeys {
    /// How long a demo token lasts.
    pub const TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

    /// A token for `user`, named after them, valid for
    /// [`Self::TOKEN_TTL`] from `now_ms`.
    ///
    /// # Errors
    /// The signing library's.
    pub fn mint(&self, user: &str, now_ms: i64) -> Result<String, MintError> {
        mint(
            &self.keys,
            &self.jwt,
            user,
            None,
            Some(user),
            Self::TOKEN_TTL,
            now_ms,
        )
    }
}
