//! Contract section 2 over HTTP: every way a token is accepted or refused.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{SECRET, TestApp, assert_error, sign, sign_with, spawn_app, spawn_app_with};

const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/keys/ec_public.pem");

async fn modules_status(app: &TestApp, token: &str) -> reqwest::Response {
    app.request(reqwest::Method::GET, "/api/stats/modules", Some(token))
        .await
}

async fn assert_401(app: &TestApp, token: &str) -> Value {
    let response = modules_status(app, token).await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await
}

#[tokio::test]
async fn no_token_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::GET, "/api/stats/modules", None)
        .await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc"] {
        let response = app
            .client
            .get(app.url("/api/stats/modules"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // Every /api endpoint needs it.
    use reqwest::Method;
    for (method, path) in [
        (Method::POST, "/api/stats/heartbeat"),
        (Method::DELETE, "/api/stats/heartbeat"),
        (Method::GET, "/api/stats/stream"),
        (Method::GET, "/api/presence/resources/x"),
        (Method::GET, "/api/admin/sessions"),
        (Method::GET, "/api/admin/history"),
    ] {
        let response = app.request(method.clone(), path, None).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn hs256_token_is_accepted() {
    let app = spawn_app().await;
    assert_eq!(
        modules_status(&app, &app.token("1")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_signature_and_garbage_are_401() {
    let app = spawn_app().await;
    let other = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret").unwrap(),
        &json!({"sub": "1", "exp": app.now_s() + 60}),
    );
    assert_401(&app, &other).await;
    let mut tampered = app.token("1");
    tampered.pop();
    tampered.push('A');
    assert_401(&app, &tampered).await;
    for garbage in ["abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30."] {
        assert_401(&app, garbage).await;
    }
}

#[tokio::test]
async fn alg_none_is_401() {
    let app = spawn_app().await;
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "1", "exp": app.now_s() + 60}))
    );
    assert_401(&app, &token).await;
}

#[tokio::test]
async fn an_algorithm_outside_the_allow_list_is_401() {
    let app = spawn_app().await; // HS256 only
    let token = sign_with(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &json!({"sub": "1", "exp": app.now_s() + 60}),
    );
    assert_401(&app, &token).await;
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--jwt-algorithms", "HS256,HS512"]).await;
    let token = sign_with(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &json!({"sub": "1", "exp": app.now_s() + 60}),
    );
    assert_eq!(modules_status(&app, &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn expiry_honours_the_leeway_on_the_service_clock() {
    let app = spawn_app().await; // leeway 30 s
    let now = app.now_s();
    let token = sign(&json!({"sub": "1", "exp": now - 20}));
    assert_eq!(
        modules_status(&app, &token).await.status(),
        StatusCode::OK,
        "within leeway"
    );
    let token = sign(&json!({"sub": "1", "exp": now - 31}));
    let body = assert_401(&app, &token).await;
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // Moving the clock expires a token that was good.
    let token = sign(&json!({"sub": "1", "exp": now + 60}));
    assert_eq!(modules_status(&app, &token).await.status(), StatusCode::OK);
    app.clock.advance(std::time::Duration::from_secs(91));
    assert_401(&app, &token).await;
}

#[tokio::test]
async fn a_token_before_its_nbf_is_401() {
    let app = spawn_app().await;
    let now = app.now_s();
    let future = sign(&json!({"sub": "1", "exp": now + 600, "nbf": now + 120}));
    let body = assert_401(&app, &future).await;
    assert!(body["error"].as_str().unwrap().contains("nbf"), "{body}");
    let within_leeway = sign(&json!({"sub": "1", "exp": now + 600, "nbf": now + 20}));
    assert_eq!(
        modules_status(&app, &within_leeway).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_without_exp_is_401_unless_allowed() {
    let app = spawn_app().await;
    let token = sign(&json!({"sub": "1"}));
    assert_401(&app, &token).await;
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--jwt-require-exp", "false"]).await;
    assert_eq!(modules_status(&app, &token).await.status(), StatusCode::OK);
    let bad_exp = sign(&json!({"sub": "1", "exp": "tomorrow"}));
    assert_401(&app, &bad_exp).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_set() {
    let app = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        "main-backend",
        "--jwt-audience",
        "presence",
    ])
    .await;
    let exp = app.now_s() + 60;
    let good = sign(&json!({"sub": "1", "exp": exp, "iss": "main-backend", "aud": "presence"}));
    assert_eq!(modules_status(&app, &good).await.status(), StatusCode::OK);
    let aud_list =
        sign(&json!({"sub": "1", "exp": exp, "iss": "main-backend", "aud": ["other", "presence"]}));
    assert_eq!(
        modules_status(&app, &aud_list).await.status(),
        StatusCode::OK
    );
    for claims in [
        json!({"sub": "1", "exp": exp, "iss": "evil", "aud": "presence"}),
        json!({"sub": "1", "exp": exp, "iss": "main-backend", "aud": "other"}),
        json!({"sub": "1", "exp": exp, "aud": "presence"}),
        json!({"sub": "1", "exp": exp, "iss": "main-backend"}),
    ] {
        assert_401(&app, &sign(&claims)).await;
    }
    // Unset, they are not checked.
    let app = spawn_app().await;
    assert_eq!(
        modules_status(
            &app,
            &sign(&json!({"sub": "1", "exp": exp, "iss": "x", "aud": "y"}))
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_or_empty_user_claim_is_401() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    for claims in [
        json!({"exp": exp}),
        json!({"sub": "", "exp": exp}),
        json!({"sub": null, "exp": exp}),
        json!({"sub": 4.5, "exp": exp}),
        json!({"sub": ["1"], "exp": exp}),
        json!({"sub": "x".repeat(129), "exp": exp}),
    ] {
        assert_401(&app, &sign(&claims)).await;
    }
}

#[tokio::test]
async fn integer_and_string_sub_are_one_user() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    let as_int = sign(&json!({"sub": 42, "exp": exp}));
    let as_str = sign(&json!({"sub": "42", "exp": exp}));
    assert_eq!(
        app.beat(&as_int, json!({"module": "pms"})).await.status(),
        StatusCode::OK
    );
    let body: Value = app
        .beat(&as_str, json!({"module": "pms"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["activeUsers"], json!(1));
    assert_eq!(app.counts("procurement").await, [1, 1, 1]);
}

#[tokio::test]
async fn user_claim_falls_back_to_user_id_then_id() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    let first = app
        .beat(
            &sign(&json!({"userId": 7, "exp": exp})),
            json!({"module": "pms"}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .beat(
            &sign(&json!({"id": "7", "exp": exp})),
            json!({"module": "ih"}),
        )
        .await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(
        second["activeUsers"],
        json!(1),
        "userId 7 and id \"7\" are one user"
    );
    assert_eq!(app.counts("procurement").await[2], 1);
    // A configured claim has no fallback.
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--jwt-user-claim", "uid"]).await;
    assert_401(&app, &sign(&json!({"sub": "7", "exp": exp}))).await;
    assert_eq!(
        modules_status(&app, &sign(&json!({"uid": "7", "exp": exp})))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_role() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    let (status, body) = app.get("/api/admin/sessions", &app.token("1")).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );
    for claims in [
        json!({"sub": "1", "exp": exp, "role": "admin"}),
        json!({"sub": "1", "exp": exp, "roles": ["user", "admin"]}),
    ] {
        let (status, _) = app.get("/api/admin/sessions", &sign(&claims)).await;
        assert_eq!(status, StatusCode::OK, "{claims}");
    }
    for claims in [
        json!({"sub": "1", "exp": exp, "role": "Admin"}),
        json!({"sub": "1", "exp": exp, "roles": "admin"}),
    ] {
        let (status, _) = app.get("/api/admin/sessions", &sign(&claims)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{claims}");
    }
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--jwt-admin-role", "ops"]).await;
    let (status, _) = app
        .get(
            "/api/admin/sessions",
            &sign(&json!({"sub": "1", "exp": exp, "role": "ops"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rs256_with_a_public_key_file() {
    let app = spawn_app_with(&["--jwt-public-key-file", RSA_PUBLIC]).await;
    let claims = json!({"sub": "1", "exp": app.now_s() + 60});
    let rs = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims,
    );
    assert_eq!(modules_status(&app, &rs).await.status(), StatusCode::OK);
    // Algorithm confusion: HS256 signed with the public key as the secret.
    let public = std::fs::read(RSA_PUBLIC).unwrap();
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public).unwrap(),
        &claims,
    );
    assert_401(&app, &confused).await;
    // A token signed with our HS secret is nothing to an RS256 service.
    assert_401(&app, &sign(&claims)).await;
}

#[tokio::test]
async fn es256_with_a_public_key_file() {
    let app = spawn_app_with(&["--jwt-public-key-file", EC_PUBLIC]).await;
    let claims = json!({"sub": "1", "exp": app.now_s() + 60});
    let es = sign_with(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        &claims,
    );
    assert_eq!(modules_status(&app, &es).await.status(), StatusCode::OK);
    let rs = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims,
    );
    assert_401(&app, &rs).await;
}

#[tokio::test]
async fn key_id_and_key_url_headers_never_choose_the_key() {
    let app = spawn_app().await;
    let claims = json!({"sub": "1", "exp": app.now_s() + 60});
    let attacker = EncodingKey::from_secret(b"attacker-secret").unwrap();
    for (kid, jku) in [
        (Some("../../../../dev/null"), None),
        (Some("' OR 1=1 --"), None),
        (Some(""), None),
        (None, Some("http://attacker.example/jwks.json")),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        header.jku = jku.map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims, &attacker).unwrap();
        assert_401(&app, &token).await;
    }
    // A `kid` on a token signed with the real key changes nothing.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("anything".into());
    let genuine = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        modules_status(&app, &genuine).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_embedded_public_key_is_never_trusted() {
    // Another RSA key pair than the one the service is configured with.
    const ATTACKER: &[u8] = include_bytes!("keys/rsa_attacker_private.pem");
    let app = spawn_app_with(&["--jwt-public-key-file", RSA_PUBLIC]).await;
    let claims = json!({"sub": "1", "exp": app.now_s() + 60});
    let attacker = EncodingKey::from_rsa_pem(ATTACKER).unwrap();
    // Signed with the attacker's key, carrying its public half as `jwk`:
    // valid if the service believed the header about which key to use.
    let mut header = Header::new(Algorithm::RS256);
    header.jwk =
        Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap());
    let token = jsonwebtoken::encode(&header, &claims, &attacker).unwrap();
    assert_401(&app, &token).await;
    // The same header on a token signed with the configured key: accepted,
    // so the refusal above was the key's, not the header's.
    let genuine = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    assert_eq!(
        modules_status(&app, &genuine).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn huge_tokens_are_refused_without_a_500() {
    let app = spawn_app().await;
    // Validly signed, but over 8 KiB: refused before it is decoded.
    let padded = sign(&json!({
        "sub": "1", "exp": app.now_s() + 60, "pad": "x".repeat(9 * 1024)
    }));
    assert_401(&app, &padded).await;
    // Just under the limit is accepted.
    let fits = sign(&json!({
        "sub": "1", "exp": app.now_s() + 60, "pad": "x".repeat(5 * 1024)
    }));
    assert_eq!(modules_status(&app, &fits).await.status(), StatusCode::OK);
    // Past the 16 KiB head limit the HTTP layer answers 431.
    let huge = format!("{}.{}.{}", "a".repeat(8 * 1024), "b".repeat(8 * 1024), "c");
    assert_eq!(
        modules_status(&app, &huge).await.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Many segments, long runs of dots, bad base64: all 401.
    for garbage in [
        ".".repeat(4000),
        "a.".repeat(2000),
        format!("{}.e30.", "!".repeat(100)),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0".to_owned(),
    ] {
        assert_401(&app, &garbage).await;
    }
}

#[tokio::test]
async fn authorization_headers_that_are_not_utf8_are_401() {
    let app = spawn_app().await;
    for raw in [
        &b"Bearer \xff\xfe\xfd"[..],
        b"Bearer \xc3\x28.e30.x",
        b"\xffearer abc",
        b"Bearer tok\x80en",
    ] {
        let response = app
            .client
            .get(app.url("/api/stats/modules"))
            .header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(raw).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // Non-UTF-8 bytes in any other header are simply not our business.
    let response = app
        .client
        .get(app.url("/api/stats/modules"))
        .bearer_auth(app.token("1"))
        .header(
            "x-request-id",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes(b"agent \xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A user id ends up in log lines (stream opened, closed) and dashboards; a
/// newline or an escape sequence in it would forge log lines or drive the
/// operator's terminal. Such ids are refused like any unusable user claim.
#[tokio::test]
async fn user_ids_with_control_characters_are_401() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    let ids = [
        "alice\n2026-01-14T09:30:00Z  INFO presence: forged line",
        "alice\r",
        "\u{1b}[31mred\u{1b}[0m",
        "tab\tin it",
        "nul\u{0}",
        "del\u{7f}",
        "c1\u{9b}31m",
    ];
    assert_user_ids_refused(&app, &ids).await;
    // Printable text in any script is a user id like any other.
    let token = sign(&json!({"sub": "Zoë 山田 <o'neil>", "exp": exp}));
    assert_eq!(
        app.beat(&token, json!({"module": "pms"})).await.status(),
        StatusCode::OK
    );
}

/// Each of `ids`, as `sub` or `userId`, is 401 for a read and a heartbeat,
/// and nobody was counted.
async fn assert_user_ids_refused(app: &TestApp, ids: &[&str]) {
    let exp = app.now_s() + 60;
    for id in ids {
        for claim in ["sub", "userId"] {
            let token = sign(&json!({claim: id, "exp": exp}));
            assert_401(app, &token).await;
            let beat = app.beat(&token, json!({"module": "pms"})).await;
            assert_eq!(beat.status(), StatusCode::UNAUTHORIZED, "{id:?}");
        }
    }
    assert_eq!(app.counts("procurement").await, [0, 0, 0]);
}

/// Ids that look like another user, or like nothing: only whitespace, or
/// with zero-width, bidi override or isolate characters that reorder or
/// hide what a dashboard shows.
#[tokio::test]
async fn user_ids_of_only_whitespace_or_with_invisible_or_bidi_characters_are_401() {
    let app = spawn_app().await;
    let exp = app.now_s() + 60;
    let ids = [
        " ",
        "   ",
        "\u{3000}",
        "\u{a0}",
        "ali\u{200b}ce",
        "alice\u{200c}",
        "\u{200d}alice",
        "al\u{2060}ice",
        "\u{feff}alice",
        "admin\u{202e}nimda",
        "\u{202a}alice",
        "\u{2066}alice\u{2069}",
        "\u{2067}x",
        "\u{2068}x",
        "alice\u{200e}",
        "alice\u{200f}",
        "alice\u{61c}",
    ];
    assert_user_ids_refused(&app, &ids).await;
    // Spaces inside an id, and letters of any script, are fine.
    let token = sign(&json!({"sub": "Ann Lee عربي", "exp": exp}));
    assert_eq!(
        app.beat(&token, json!({"module": "pms"})).await.status(),
        StatusCode::OK
    );
}
