//! What every endpoint shares: error shape for 404/405, health, OpenAPI,
//! request ids, CORS; some in-process through the router, without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode as AxumStatus};
use http_body_util::BodyExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::helpers::{SECRET, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_paths_are_json_404() {
    let app = spawn_app().await;
    for path in ["/", "/api", "/api/stats/nope", "/api/stats/modules/extra"] {
        let response = app.request(reqwest::Method::GET, path, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn wrong_methods_are_json_405() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::PUT, "/api/stats/heartbeat", None)
        .await;
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let response = app
        .request(reqwest::Method::POST, "/api/stats/modules", None)
        .await;
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz", "").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ready", "store": "memory"})
        )
    );
}

#[tokio::test]
async fn openapi_documents_every_endpoint() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/stats/heartbeat", "post"),
        ("/api/stats/heartbeat", "delete"),
        ("/api/stats/modules", "get"),
        ("/api/presence/resources/{resource}", "get"),
        ("/api/presence/users", "post"),
        ("/api/stats/stream", "get"),
        ("/api/admin/sessions", "get"),
        ("/api/admin/history", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        json!("bearer")
    );
    let module = "/components/schemas/HeartbeatRequest/properties/module/enum";
    assert_eq!(doc.pointer(module), Some(&json!(["pms", "ih"])));

    // The document lists this instance's modules, so schema-driven clients
    // and tests send codes it accepts.
    let custom = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--modules",
        "crm:sales,ih:innovation",
    ])
    .await;
    let (_, doc) = custom.get("/openapi.json", "").await;
    assert_eq!(doc.pointer(module), Some(&json!(["crm", "ih"])));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let first = app.request(reqwest::Method::GET, "/healthz", None).await;
    let second = app.request(reqwest::Method::GET, "/healthz", None).await;
    assert!(!first.headers()["x-request-id"].is_empty());
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"],
        "ids differ"
    );
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "abc-123",
        "a caller's id is kept"
    );
}

#[tokio::test]
async fn cors_headers_only_for_allowed_origins() {
    let app = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--cors-allowed-origins",
        "https://app.example.com,https://admin.example.com",
    ])
    .await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/stats/heartbeat"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        preflight.headers()["access-control-max-age"],
        "3600",
        "browsers may cache the preflight"
    );
    // A preflight from another origin gets no grant.
    let refused = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/stats/heartbeat"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // An actual request from an allowed origin carries the grant too.
    let actual = app
        .client
        .get(app.url("/api/stats/modules"))
        .bearer_auth(app.token("1"))
        .header("origin", "https://admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), StatusCode::OK);
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let exposed = actual.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("retry-after") && exposed.contains("x-request-id"),
        "the client can read Retry-After and the request id: {exposed}"
    );
    let other = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let no_cors = spawn_app().await;
    let response = no_cors
        .client
        .get(no_cors.url("/healthz"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn in_process_heartbeat_through_the_router() {
    let app = spawn_app().await;
    let router = presence::app(app.state.clone(), &[]);
    let request = Request::post("/api/stats/heartbeat")
        .header(
            "authorization",
            format!("Bearer {}", app.token("in-process")),
        )
        .header("content-type", "application/json")
        .body(Body::from(r#"{"module":"ih"}"#))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), AxumStatus::OK);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["activeUsers"], json!(1));
    // The same state, seen over the socket.
    assert_eq!(app.counts("innovation").await, [1, 1, 1]);

    let request = Request::get("/api/admin/sessions")
        .header(
            "authorization",
            format!("Bearer {}", app.token("in-process")),
        )
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), AxumStatus::FORBIDDEN);
}

#[tokio::test]
async fn the_demo_page_and_its_token_endpoint_exist_only_in_demo_mode() {
    let demo = spawn_app_with(&[]).await;
    let page = demo.request(reqwest::Method::GET, "/demo/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("/demo/presence-client.js")
    );
    let client = demo
        .request(reqwest::Method::GET, "/demo/presence-client.js", None)
        .await;
    assert!(
        client.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        client
            .text()
            .await
            .unwrap()
            .contains("export function createHeartbeatService")
    );
    let (status, body) = demo.get("/demo/token?user=alice", "").await;
    assert_eq!(status, StatusCode::OK);
    let token = body["token"].as_str().unwrap();
    let beat = demo.beat(token, json!({"module": "pms"})).await;
    assert_eq!(beat.status(), StatusCode::OK, "a demo token works");
    let (status, body) = demo.get("/demo/token", "").await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );

    let real = spawn_app().await;
    for path in [
        "/demo/",
        "/demo/token?user=alice",
        "/demo/presence-client.js",
    ] {
        let response = real.request(reqwest::Method::GET, path, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

/// The dashboard and the demo page, and everything they load, say that
/// they may not be framed (clickjacking), that their types are not to be
/// sniffed, and where code and styles may come from: their own origin only.
#[tokio::test]
async fn the_dashboard_and_the_demo_page_send_security_headers() {
    let app = spawn_app_with(&[]).await;
    for page in ["/admin", "/demo/"] {
        let response = app.request(reqwest::Method::GET, page, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert_page_headers(page, response.headers());
        let html = response.text().await.unwrap();
        // What a policy of the page's own origin allows: no inline script or
        // style element, which the policy would block.
        for tag in html.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap();
            if tag.starts_with("script") {
                assert!(tag.contains("src=\"/"), "{page}: inline script <{tag}>");
            }
            assert!(!tag.starts_with("style"), "{page}: inline style <{tag}>");
        }
        // Everything it loads comes with the same headers.
        let assets: Vec<&str> = html
            .split("src=\"")
            .chain(html.split("href=\"").skip(1))
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|s| s.starts_with('/'))
            .collect();
        assert!(!assets.is_empty(), "{page}");
        for asset in assets {
            let response = app.request(reqwest::Method::GET, asset, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{asset}");
            assert_page_headers(asset, response.headers());
        }
    }
}

fn assert_page_headers(path: &str, headers: &reqwest::header::HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{path}: no {name}"))
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    assert_eq!(header("x-frame-options"), "DENY", "{path}");
    let csp = header("content-security-policy");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for expected in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            directives.contains(&expected),
            "{path}: {expected} in {csp}"
        );
    }
    assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
}
