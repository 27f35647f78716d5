//! One delivery attempt: a signed `POST` of a batch, its answer read up to
//! [`MAX_ANSWER_BYTES`], and what the outcome was, described for the
//! status page without the URL (which may hold credentials).

use std::time::Duration;

use bytes::Bytes;

use super::sign;
use crate::config::WebhookSecret;

/// The most of an answer that is read; the rest is never received.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTP client of the deliverers: no redirects followed, `timeout`
/// for a whole attempt (connection, request, answer).
///
/// # Errors
/// When the TLS back end cannot start.
pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("presence-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// The answer's status, when there was one.
    pub status: Option<u16>,
    /// What went wrong, for the status page and the log.
    pub error: String,
}

/// One batch as sent: the same id and body on every attempt.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// `webhook-id`.
    pub id: String,
    /// The JSON body.
    pub body: Bytes,
}

/// POSTs `message` to `url`, signed with `secret` at `timestamp`
/// (seconds); `Ok` on a 2xx answer.
pub(super) async fn attempt(
    client: reqwest::Client,
    url: String,
    secret: WebhookSecret,
    message: Message,
    timestamp: i64,
) -> Result<u16, Refused> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in sign::headers(&secret, &message.id, timestamp, &message.body) {
        request = request.header(name, value);
    }
    let mut response = request
        .body(message.body)
        .send()
        .await
        .map_err(|e| Refused {
            status: None,
            error: describe(&e),
        })?;
    let status = response.status();
    // Read (a bounded part of) the answer, so a connection can be reused;
    // a receiver that answered has answered, whatever its body does.
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Refused {
            status: Some(status.as_u16()),
            error: format!("HTTP {status}"),
        })
    }
}

/// A transport error in a few words, without the URL: `timed out`, or
/// the innermost causes (`connection refused`, a DNS or TLS failure).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match causes.last() {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.into(),
    }
}
