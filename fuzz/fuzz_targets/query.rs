//! Any query string (or path parameter) into each endpoint that parses one,
//! through the whole router with a valid token:
//!
//! | first byte | request |
//! | --- | --- |
//! | `a` | `GET /api/admin/sessions?<rest>` (`limit`, `cursor`), as an admin |
//! | `h` | `GET /api/admin/history?<rest>` (`window`), as an admin |
//! | `d` | `DELETE /api/stats/heartbeat?<rest>` (`clientId`, `all`) |
//! | `r` | `GET /api/presence/resources/<rest>` |
//! | `s` | `GET /api/stats/stream?<rest>` (`access_token`), no header; the |
//! |     | text `TOKEN` in `<rest>` becomes a valid token |
//!
//! (any other first byte picks one by its value). Bytes that cannot stand in
//! a URI are percent-encoded; `%`, `&`, `=` and `+` stay as given, so the
//! fuzzer writes its own escapes.
//!
//! The oracle: no panic, no 5xx, contract error bodies, only the statuses
//! each endpoint documents, and a success only for parameters the contract
//! accepts (worked out here from the decoded pairs).

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use presence_fuzz::{App, is_client_id, is_text};

static APP: LazyLock<App> = LazyLock::new(|| App::new(&[]));

/// Escaped in a query: all but unreserved, sub-delims, `:@/?` and `%`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'?')
    .remove(b'%');

/// Escaped in a path segment: as in a query, and `/` and `?` too.
const SEGMENT: &AsciiSet = &QUERY.add(b'/').add(b'?');

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let app = &*APP;
    match which {
        b'a' => sessions(app, rest),
        b'h' => history(app, rest),
        b'd' => leave(app, rest),
        b'r' => resource(app, rest),
        b's' => stream(app, rest),
        other => match other % 5 {
            0 => sessions(app, rest),
            1 => history(app, rest),
            2 => leave(app, rest),
            3 => resource(app, rest),
            _ => stream(app, rest),
        },
    }
});

fn request(method: Method, uri: &str, bearer: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(bearer) = bearer {
        builder = builder.header(AUTHORIZATION, bearer);
    }
    builder
        .body(Body::empty())
        .expect("an escaped URI is valid")
}

fn query_uri(path: &str, query: &[u8]) -> String {
    format!("{path}?{}", percent_encode(query, QUERY))
}

/// The query's pairs as a form decoder reads them.
fn pairs(query: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(query)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of `name` when it appears exactly once; `Err` when it repeats.
fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ()> {
    let mut found = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}

fn assert_status(reply: &presence_fuzz::Reply, allowed: &[u16]) {
    assert!(
        allowed.contains(&reply.status.as_u16()),
        "undocumented status {}: {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    if reply.status == StatusCode::BAD_REQUEST {
        assert_eq!(reply.code(), "invalid_query");
    }
}

/// `limit` from 1 to 1000 and a `cursor` this endpoint made.
fn sessions(app: &App, query: &[u8]) {
    let uri = query_uri("/api/admin/sessions", query);
    let reply = app.send(request(Method::GET, &uri, Some(&app.admin_bearer)));
    assert_status(&reply, &[200, 400]);
    if reply.status != StatusCode::OK {
        return;
    }
    let pairs = pairs(query);
    let limit = single(&pairs, "limit").expect("a repeated limit was accepted");
    if let Some(limit) = limit {
        let n: usize = limit
            .parse()
            .expect("a limit that is not a number was accepted");
        assert!((1..=1000).contains(&n), "limit {n} was accepted");
    }
    let cursor = single(&pairs, "cursor").expect("a repeated cursor was accepted");
    if let Some(cursor) = cursor {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .expect("a cursor that is not base64url was accepted");
        let (_, user, client): (i64, String, Option<String>) = serde_json::from_slice(&bytes)
            .expect("a cursor that is not [lastSeen, user, client] was accepted");
        assert!((1..=128).contains(&user.len()), "cursor user {user:?}");
        assert!(client.is_none_or(|c| is_client_id(&c)), "cursor client");
    }
    let body = reply.json();
    assert!(body["sessions"].is_array(), "{body}");
}

/// `window` from 1m to 24h, default 1h.
fn history(app: &App, query: &[u8]) {
    let uri = query_uri("/api/admin/history", query);
    let reply = app.send(request(Method::GET, &uri, Some(&app.admin_bearer)));
    assert_status(&reply, &[200, 400]);
    if reply.status != StatusCode::OK {
        return;
    }
    let pairs = pairs(query);
    let window = single(&pairs, "window").expect("a repeated window was accepted");
    let body = reply.json();
    if let Some(window) = window {
        let d = humantime::parse_duration(window.trim())
            .expect("a window that is not a duration was accepted");
        assert!(
            (Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&d),
            "window {d:?} was accepted"
        );
        assert_eq!(body["window"], window, "{body}");
    } else {
        assert_eq!(body["window"], "1h", "{body}");
    }
}

/// `all=true` ends every session; else `clientId` (or none) ends one.
fn leave(app: &App, query: &[u8]) {
    let uri = query_uri("/api/stats/heartbeat", query);
    let reply = app.send(request(Method::DELETE, &uri, Some(&app.user_bearer)));
    assert_status(&reply, &[204, 400]);
    if reply.status != StatusCode::NO_CONTENT {
        return;
    }
    assert!(reply.body.is_empty(), "a 204 with a body");
    let pairs = pairs(query);
    let all = single(&pairs, "all").expect("a repeated all was accepted");
    let client = single(&pairs, "clientId").expect("a repeated clientId was accepted");
    match all {
        Some("true") => {}
        Some("false") | None => {
            assert!(
                client.is_none_or(is_client_id),
                "clientId {client:?} was accepted"
            );
        }
        Some(other) => panic!("all={other:?} was accepted"),
    }
}

/// A resource of 1 to 128 characters, no control characters.
fn resource(app: &App, segment: &[u8]) {
    let uri = format!(
        "/api/presence/resources/{}",
        percent_encode(segment, SEGMENT)
    );
    let reply = app.send(request(Method::GET, &uri, Some(&app.user_bearer)));
    if segment.is_empty() {
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        return;
    }
    assert_status(&reply, &[200, 400]);
    let decoded = percent_decode(segment).collect::<Vec<u8>>();
    let valid = std::str::from_utf8(&decoded).is_ok_and(|s| is_text(s, 128));
    assert_eq!(
        reply.status == StatusCode::OK,
        valid,
        "resource {:?}",
        String::from_utf8_lossy(&decoded)
    );
    if valid {
        let body = reply.json();
        assert_eq!(
            body["resource"].as_str().map(str::as_bytes),
            Some(&decoded[..])
        );
    }
}

/// `access_token`, for EventSource: the first one counts.
fn stream(app: &App, query: &[u8]) {
    let token = app.user_bearer.trim_start_matches("Bearer ");
    let query = replace(query, b"TOKEN", token.as_bytes());
    let uri = query_uri("/api/stats/stream", &query);
    let reply = app.send(request(Method::GET, &uri, None));
    assert_status(&reply, &[200, 401]);
    let first = pairs(&query)
        .into_iter()
        .find_map(|(k, v)| (k == "access_token").then_some(v));
    let valid = first.as_deref() == Some(token);
    assert_eq!(
        reply.status == StatusCode::OK,
        valid,
        "access_token {first:?}"
    );
    if valid {
        assert_eq!(reply.headers["content-type"], "text/event-stream");
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
