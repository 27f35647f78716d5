//! `spawn_app()`: the real service on port 0, and a helper per endpoint.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use presence::AppState;
use presence::clock::ManualClock;
use presence::config::{Cli, Command};
use presence::store::TimeSource;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The HS256 secret every test app is configured with.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// 2026-01-14T09:30:00Z, a Wednesday: where every test clock starts.
pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-14T09:30:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A running service and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Parses `presence serve` arguments the way the binary does.
pub fn serve_config(args: &[&str]) -> presence::config::Config {
    let mut argv = vec!["presence", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Some(Command::Serve(a)) => a.into_config().unwrap(),
        _ => unreachable!("serve was given"),
    }
}

/// The service with `JWT_SECRET` = [`SECRET`] and default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&["--jwt-secret", SECRET]).await
}

/// The state the service would run with for these `presence serve`
/// arguments, on a [`ManualClock`] at [`start_time`].
pub fn build_state(args: &[&str]) -> (AppState, Arc<ManualClock>, presence::config::Config) {
    build_state_on(args, Arc::new(ManualClock::new(start_time())))
}

/// [`build_state`] on a given clock.
pub fn build_state_on(
    args: &[&str],
    clock: Arc<ManualClock>,
) -> (AppState, Arc<ManualClock>, presence::config::Config) {
    let config = serve_config(args);
    let state = AppState::build(&config, clock.clone(), TimeSource::Clock(clock.clone())).unwrap();
    (state, clock, config)
}

/// The service with these `presence serve` arguments.
pub async fn spawn_app_with(args: &[&str]) -> TestApp {
    spawn_app_on(args, Arc::new(ManualClock::new(start_time()))).await
}

/// The service with these `presence serve` arguments, on `clock` (which a
/// test may share between two apps, as a restart would).
pub async fn spawn_app_on(args: &[&str], clock: Arc<ManualClock>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        presence::telemetry::init(presence::config::LogFormat::Pretty);
    }
    let (state, clock, config) = build_state_on(args, clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = presence::app(state.clone(), &config.args.cors_allowed_origins);
    let (tx, rx) = oneshot::channel::<()>();
    let sweep = config.sweep_interval;
    let serve_state = state.clone();
    let serving = tokio::spawn(async move {
        presence::serve(listener, router, serve_state, sweep, async {
            let _ = rx.await;
        })
        .await;
    });
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        clock,
        state,
        shutdown: Some(tx),
        serving: Some(serving),
    }
}

/// Signs `claims` with HS256 and [`SECRET`].
pub fn sign(claims: &Value) -> String {
    sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        claims,
    )
}

pub fn sign_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

impl TestApp {
    /// Shuts the service down as SIGTERM does, and waits until `serve` has
    /// returned (requests drained, last snapshot saved).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.unwrap();
        }
    }

    /// Seconds since the epoch on the app's clock.
    pub fn now_s(&self) -> i64 {
        use presence::clock::Clock;
        self.clock.now_ms() / 1000
    }

    /// A valid token for `user`, expiring in an hour of app time.
    pub fn token(&self, user: &str) -> String {
        sign(&json!({"sub": user, "exp": self.now_s() + 3600}))
    }

    /// A valid token for `user` with extra claims (a `name`, a scope, ...).
    pub fn token_with(&self, user: &str, claims: &Value) -> String {
        let mut all = json!({"sub": user, "exp": self.now_s() + 3600});
        for (k, v) in claims.as_object().into_iter().flatten() {
            all[k] = v.clone();
        }
        sign(&all)
    }

    /// A valid admin token for `user`.
    pub fn admin_token(&self, user: &str) -> String {
        sign(&json!({"sub": user, "exp": self.now_s() + 3600, "role": "admin"}))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional bearer token and no body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// POSTs a heartbeat with a JSON body.
    pub async fn beat(&self, token: &str, body: Value) -> Response {
        self.client
            .post(self.url("/api/stats/heartbeat"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A heartbeat that must succeed.
    pub async fn beat_ok(&self, user: &str, body: Value) -> Value {
        let response = self.beat(&self.token(user), body).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// GETs `path` with `token`, returning status and JSON body.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The module counts, as a user sees them.
    pub async fn modules(&self) -> Value {
        let (status, body) = self
            .get("/api/stats/modules", &self.token("observer"))
            .await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// `[activeNow, today, totalUsers]` of one module's stats key.
    pub async fn counts(&self, key: &str) -> [u64; 3] {
        let body = self.modules().await;
        let m = &body[key];
        [
            m["activeNow"].as_u64().unwrap(),
            m["today"].as_u64().unwrap(),
            m["totalUsers"].as_u64().unwrap(),
        ]
    }

    /// DELETEs the heartbeat with a query string.
    pub async fn leave(&self, user: &str, query: &str) -> StatusCode {
        self.client
            .delete(self.url(&format!("/api/stats/heartbeat{query}")))
            .bearer_auth(self.token(user))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Asserts the contract's error body and code.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error message: {body}"
    );
    body
}
