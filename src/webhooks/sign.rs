//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the
//! three headers that let a receiver check, with any Standard Webhooks
//! library, that a delivery comes from this service and was not changed.
//!
//! The signature is `v1,` and the base64 of the HMAC-SHA256, keyed with
//! the secret's bytes (the base64 after `whsec_`, decoded), of
//! `{webhook-id}.{webhook-timestamp}.{body}`; the timestamp is in whole
//! seconds since the Unix epoch.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::WebhookSecret;

/// The header naming a message, the same on every attempt.
pub const ID_HEADER: &str = "webhook-id";
/// The header with the attempt's time, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The `webhook-signature` value of `body` sent as message `id` at
/// `timestamp` (seconds): `v1,<base64 of the HMAC-SHA256>`.
pub fn signature(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    #[allow(clippy::expect_used, reason = "HMAC accepts any key length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let code = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(code)
    )
}

/// The three Standard Webhooks headers of one attempt, as (name, value).
pub fn headers(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (ID_HEADER, id.to_owned()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature(secret, id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries
    /// (standard-webhooks/standard-webhooks, `libraries/rust/src/lib.rs`,
    /// `test_sign`).
    #[test]
    fn signs_the_reference_libraries_test_vector() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(
                &secret,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn headers_carry_the_id_the_timestamp_and_a_signature_of_the_body() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let [id, ts, sig] = headers(&secret, "msg_1", 1_700_000_000, b"{}");
        assert_eq!(id, (ID_HEADER, "msg_1".to_owned()));
        assert_eq!(ts, (TIMESTAMP_HEADER, "1700000000".to_owned()));
        assert_eq!(sig.1, signature(&secret, "msg_1", 1_700_000_000, b"{}"));
        assert_ne!(sig.1, signature(&secret, "msg_1", 1_700_000_000, b"[]"));
        assert_ne!(sig.1, signature(&secret, "msg_2", 1_700_000_000, b"{}"));
        assert_ne!(sig.1, signature(&secret, "msg_1", 1_700_000_001, b"{}"));
    }
}
