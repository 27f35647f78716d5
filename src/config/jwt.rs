//! [`JwtArgs`]: how tokens are checked (the key, the algorithms, the claims
//! that must match), with the claims a profile is copied from
//! ([`ProfileClaims`]) and who may see whom ([`Visibility`]). Shared by
//! `presence serve` and `presence token`; its `Debug` never prints the
//! secret.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse::{parse_algorithm, parse_claim_name, parse_duration};

/// How tokens are checked (contract section 2).
#[derive(Clone, Args)]
pub struct JwtArgs {
    /// HS256 key. With no key at all the service runs in demo mode.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS*, PS*, ES* or EdDSA tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Accepted algorithms, comma-separated [default: HS256, or the key's
    /// family].
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',', value_parser = parse_algorithm)]
    pub jwt_algorithms: Vec<jsonwebtoken::Algorithm>,

    /// Required `iss`, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud`, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Claim holding the user id (`sub` falls back to `userId`, then `id`).
    #[arg(long, env = "JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// Role value that grants admin (claim `role`, or in claim `roles`).
    #[arg(long, env = "JWT_ADMIN_ROLE", default_value = "admin")]
    pub jwt_admin_role: String,

    /// Reject tokens without `exp`.
    #[arg(long, env = "JWT_REQUIRE_EXP", default_value_t = true, action = clap::ArgAction::Set)]
    pub jwt_require_exp: bool,

    /// String claims copied from the token and shown with the user
    /// wherever presence lists them, comma-separated; `none` for none.
    #[arg(long, env = "PROFILE_CLAIMS", default_value = "name,picture", value_parser = ProfileClaims::parse)]
    pub profile_claims: ProfileClaims,

    /// A token with this claim `true` is counted in module stats but never
    /// listed in viewers or user status.
    #[arg(long, env = "JWT_HIDDEN_CLAIM", default_value = "presence_hidden", value_parser = parse_claim_name)]
    pub jwt_hidden_claim: String,

    /// Claim with the resource patterns a user may watch under
    /// PRESENCE_VISIBILITY=scoped (a string or an array of strings: exact
    /// ids, or prefixes ending in `*`).
    #[arg(long, env = "JWT_SCOPE_CLAIM", default_value = "presence_scope", value_parser = parse_claim_name)]
    pub jwt_scope_claim: String,
}

/// `PROFILE_CLAIMS`: the claims a profile is made of, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileClaims(pub Vec<String>);

impl ProfileClaims {
    /// The most claims a profile may name.
    pub const MAX: usize = 16;

    /// Parses `name,picture`; `none` (or nothing but commas and spaces:
    /// an empty environment variable counts as unset) is no claims.
    ///
    /// # Errors
    /// A claim name that is not 1 to 64 printable characters, a repeated
    /// one, or more than [`Self::MAX`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut claims: Vec<String> = Vec::new();
        if s.trim() == "none" {
            return Ok(Self(claims));
        }
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = parse_claim_name(name)?;
            if claims.contains(&name) {
                return Err(format!("`{name}` is named twice"));
            }
            claims.push(name);
        }
        if claims.len() > Self::MAX {
            return Err(format!("at most {} claims", Self::MAX));
        }
        Ok(Self(claims))
    }
}

/// `PRESENCE_VISIBILITY`: who may read viewers and user status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Visibility {
    /// Any authenticated user.
    #[default]
    Users,
    /// Non-admins only resources their scope claim matches.
    Scoped,
    /// Admins only.
    Admins,
}

impl fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtArgs")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_user_claim", &self.jwt_user_claim)
            .field("jwt_admin_role", &self.jwt_admin_role)
            .field("jwt_require_exp", &self.jwt_require_exp)
            .field("profile_claims", &self.profile_claims)
            .field("jwt_hidden_claim", &self.jwt_hidden_claim)
            .field("jwt_scope_claim", &self.jwt_scope_claim)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::serve;

    #[test]
    fn presence_settings_parse_or_name_their_variable() {
        let cfg = serve(&[]).unwrap();
        assert_eq!(cfg.args.jwt.profile_claims.0, ["name", "picture"]);
        assert_eq!(cfg.args.presence_visibility, Visibility::Users);
        assert_eq!(cfg.args.jwt.jwt_hidden_claim, "presence_hidden");
        assert_eq!(cfg.args.jwt.jwt_scope_claim, "presence_scope");
        let cfg = serve(&[
            "--profile-claims",
            "none",
            "--presence-visibility",
            "scoped",
        ])
        .unwrap();
        assert!(cfg.args.jwt.profile_claims.0.is_empty());
        assert_eq!(cfg.args.presence_visibility, Visibility::Scoped);
        let err = serve(&["--profile-claims", "name,name"]).unwrap_err();
        assert!(
            err.starts_with("PROFILE_CLAIMS (--profile-claims)"),
            "{err}"
        );
        let err = serve(&["--presence-visibility", "everyone"]).unwrap_err();
        assert!(
            err.starts_with("PRESENCE_VISIBILITY (--presence-visibility)"),
            "{err}"
        );
        assert!(err.contains("scoped"), "{err}");
        let err = serve(&["--jwt-scope-claim", "a b"]).unwrap_err();
        assert!(
            err.starts_with("JWT_SCOPE_CLAIM (--jwt-scope-claim)"),
            "{err}"
        );
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let cfg = serve(&["--jwt-secret", "hunter2-very-secret"]).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
