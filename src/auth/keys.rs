//! Where verification keys come from: the configuration's key settings
//! turned into key material, read once when the service state is built.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::config::{ConfigError, JwtArgs};

/// Key material that must never reach a log line: `Debug` prints a
/// placeholder.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Wraps key bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// A random 256-bit key, for demo mode.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(Arc::new(bytes))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where verification keys come from; exactly one source.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// No key configured: a random per-process HS256 secret.
    Demo(Secret),
    /// `JWT_SECRET`.
    Hmac(Secret),
    /// `JWT_PUBLIC_KEY_FILE`, already read and parsed.
    PublicKey {
        /// The file it came from.
        path: PathBuf,
        /// The PEM text.
        pem: Arc<[u8]>,
        /// RSA, EC or Ed.
        kind: PublicKeyKind,
    },
}

/// The kinds of public key a PEM file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKeyKind {
    /// RS256, RS384, RS512, PS256, PS384, PS512.
    Rsa,
    /// ES256, ES384.
    Ec,
    /// EdDSA (Ed25519).
    Ed,
}

impl PublicKeyKind {
    /// Which kind `pem` is, if any.
    fn of(pem: &[u8]) -> Option<Self> {
        [Self::Rsa, Self::Ec, Self::Ed]
            .into_iter()
            .find(|kind| kind.decoding_key(pem).is_ok())
    }

    fn decoding_key(self, pem: &[u8]) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        match self {
            Self::Rsa => DecodingKey::from_rsa_pem(pem),
            Self::Ec => DecodingKey::from_ec_pem(pem),
            Self::Ed => DecodingKey::from_ed_pem(pem),
        }
    }

    fn family(self) -> AlgorithmFamily {
        match self {
            Self::Rsa => AlgorithmFamily::Rsa,
            Self::Ec => AlgorithmFamily::Ec,
            Self::Ed => AlgorithmFamily::Ed,
        }
    }
}

impl KeySource {
    /// Reads the key settings: the secret, or the public key file, or (with
    /// neither) a random demo key.
    ///
    /// # Errors
    /// Both key sources set, an empty secret, an unreadable or unparsable
    /// key file, or an algorithm outside the key's family.
    pub fn load(args: &JwtArgs) -> Result<Self, ConfigError> {
        let source = match (&args.jwt_secret, &args.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    "set JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both",
                ));
            }
            (Some(secret), None) if secret.is_empty() => {
                return Err(ConfigError::new("JWT_SECRET", "must not be empty"));
            }
            (Some(secret), None) => Self::Hmac(Secret::new(secret.as_bytes())),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "JWT_PUBLIC_KEY_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let kind = PublicKeyKind::of(&pem).ok_or_else(|| {
                    ConfigError::new(
                        "JWT_PUBLIC_KEY_FILE",
                        format!(
                            "{} is not a PEM RSA, EC or Ed25519 public key",
                            path.display()
                        ),
                    )
                })?;
                Self::PublicKey {
                    path: path.clone(),
                    pem: pem.into(),
                    kind,
                }
            }
            (None, None) => Self::Demo(Secret::random()),
        };
        if let Some(bad) = args
            .jwt_algorithms
            .iter()
            .find(|a| a.family() != source.family())
        {
            return Err(ConfigError::new(
                "JWT_ALGORITHMS",
                format!(
                    "{bad:?} does not fit the configured key, which takes {}",
                    names(source.family().algorithms())
                ),
            ));
        }
        Ok(source)
    }

    /// The algorithm family the key belongs to.
    pub fn family(&self) -> AlgorithmFamily {
        match self {
            Self::Demo(_) | Self::Hmac(_) => AlgorithmFamily::Hmac,
            Self::PublicKey { kind, .. } => kind.family(),
        }
    }

    /// The HS256 secret, when the key is one (tokens can be minted).
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Self::Demo(s) | Self::Hmac(s) => Some(s),
            Self::PublicKey { .. } => None,
        }
    }

    /// An HS256 secret shorter than 32 bytes can be brute-forced offline
    /// from any token signed with it; the service warns at start-up.
    pub(crate) fn is_weak(&self) -> bool {
        matches!(self, Self::Hmac(s) if s.expose().len() < 32)
    }

    /// True in demo mode.
    pub(crate) fn is_demo(&self) -> bool {
        matches!(self, Self::Demo(_))
    }

    pub(super) fn decoding_key(&self) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        match self {
            Self::Demo(s) | Self::Hmac(s) => DecodingKey::from_secret(s.expose()),
            Self::PublicKey { pem, kind, .. } => kind.decoding_key(pem),
        }
    }
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
