//! The parsers of single values (a duration, a time zone, an algorithm, a
//! claim name, a key prefix) that clap calls for one field at a time, and
//! [`one_line`], which turns clap's error about such a value into the
//! contract's one line naming the variable.

use std::time::Duration;

use chrono_tz::Tz;

/// The longest duration any setting takes. Far past any sensible TTL,
/// timeout or refill, and short enough that the arithmetic done with
/// durations later (`Instant + d`, milliseconds since the epoch, the rate
/// limiter's nanoseconds, tokio's timers) can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a humantime duration (`45s`, `5m`, `1h 30m`) of at most
/// [`MAX_DURATION`].
///
/// # Errors
/// What a duration looks like, or that it is too long.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration like 45s or 5m ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "expected a duration of at most 365 days, got `{}`",
            s.trim()
        ));
    }
    Ok(d)
}

pub(super) fn parse_key_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 64 printable characters without braces".into())
    }
}

pub(super) fn parse_timezone(s: &str) -> Result<Tz, String> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| format!("expected an IANA time zone like Europe/Berlin, got `{s}`"))
}

pub(super) fn parse_algorithm(s: &str) -> Result<jsonwebtoken::Algorithm, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA")
    })
}

/// A claim name: 1 to 64 printable ASCII characters, no comma.
pub(super) fn parse_claim_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a claim name of 1 to 64 printable characters, got `{s}`"
        ))
    }
}

/// Turns a clap error into the contract's one-line message where the error
/// is about a value; other errors (help, version, unknown flags) are clap's.
pub fn one_line(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return None,
    };
    // `--session-ttl <SESSION_TTL>`: a setting's value name is its
    // variable; a flag without a variable (`--ttl <DURATION>`) is named alone.
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_owned();
    let value_name = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(name, _)| name.to_owned());
    let from_flag = flag
        .trim_start_matches('-')
        .replace('-', "_")
        .to_uppercase();
    let variable = match value_name {
        Some(name) if name == from_flag => format!("{name} ({flag})"),
        _ => flag,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let why = std::error::Error::source(err).map_or_else(
        || match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(v)) => format!("expected one of {}", v.join(", ")),
            _ => "invalid value".to_owned(),
        },
        ToString::to_string,
    );
    Some(format!("{variable}: invalid value `{value}`: {why}"))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::serve;

    #[test]
    fn bad_duration_names_the_variable_on_one_line() {
        let err = serve(&["--session-ttl", "soon"]).unwrap_err();
        assert!(err.starts_with("SESSION_TTL (--session-ttl)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_store_lists_the_possible_values() {
        let err = serve(&["--store", "postgres"]).unwrap_err();
        assert!(err.starts_with("STORE (--store)"), "{err}");
        assert!(err.contains("memory") && err.contains("redis"), "{err}");
    }
}
