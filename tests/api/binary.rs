//! The built binary itself: demo mode, `presence token`, config errors,
//! graceful shutdown. Run with `cargo test --release` (the README's test
//! command) these exercise the release binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_presence");

/// The binary with a clean configuration: no `JWT_*` or other settings
/// inherited, run in an empty directory so no `.env` is read.
pub(super) fn presence(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("LISTEN_ADDR", "127.0.0.1:0");
    cmd
}

/// Lines of a child's pipe, forwarded as they come.
pub(super) fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub(super) fn next_line_matching(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the binary printed the expected line in time");
        seen.push(line.clone());
        if pred(&line) {
            return line;
        }
    }
}

pub(super) fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub(super) fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the binary did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn demo_mode_prints_a_token_and_curl_lines_that_work_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = presence(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut out = Vec::new();
    let mut err = Vec::new();
    next_line_matching(&stderr, &mut err, |l| l.contains("demo mode"));
    let post = next_line_matching(&stdout, &mut out, |l| {
        l.contains("curl") && l.contains("-X POST")
    });
    let get = next_line_matching(&stdout, &mut out, |l| {
        l.contains("curl") && l.contains("/api/stats/modules")
    });
    let viewers = next_line_matching(&stdout, &mut out, |l| {
        l.contains("curl") && l.contains("/api/presence/resources/")
    });
    let users = next_line_matching(&stdout, &mut out, |l| {
        l.contains("curl") && l.contains("/api/presence/users")
    });
    let live = next_line_matching(&stdout, &mut out, |l| {
        l.contains("curl") && l.contains("/api/presence/stream")
    });
    let token = out[1].trim().to_owned();
    assert_eq!(
        token.matches('.').count(),
        2,
        "line 2 is the token: {out:?}"
    );

    let run = |line: &str| -> Value {
        let output = Command::new("sh")
            .arg("-c")
            .arg(line.trim())
            .output()
            .unwrap();
        assert!(output.status.success(), "{line}");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let beat = run(&post);
    assert_eq!(beat["success"], Value::Bool(true), "{beat}");
    let modules = run(&get);
    assert_eq!(modules["procurement"]["activeNow"], 1, "{modules}");
    let viewers = run(&viewers);
    assert_eq!(viewers["count"], 1, "{viewers}");
    assert_eq!(
        viewers["viewers"][0]["profile"]["name"], "Demo Admin",
        "demo tokens carry a name: {viewers}"
    );
    let users = run(&users);
    assert_eq!(users["users"]["demo"]["state"], "active", "{users}");
    // The presence stream: one event per resource, then curl gives up
    // (--max-time: exit 28) on a stream that stays open.
    let output = Command::new("sh")
        .arg("-c")
        .arg(live.trim())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(28), "{live}");
    let events = String::from_utf8_lossy(&output.stdout);
    assert_eq!(events.matches("event: presence").count(), 2, "{events}");
    assert!(
        events.contains(r#""resource":"request:1","count":1"#),
        "{events}"
    );
    assert_eq!(users["users"]["demo"]["modules"][0], "pms", "{users}");
    // A token from an earlier run was signed with that run's random key.
    let stale = run(&get.replace(&token, &token_for("an-earlier-run", "demo")));
    assert_eq!(stale["code"], "unauthorized", "{stale}");
    assert!(
        stale["error"].as_str().unwrap().contains("demo mode"),
        "{stale}"
    );

    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    err.extend(stderr.try_iter());
    let logs = err.join("\n");
    // Contract section 5: the default log is not an access log.
    assert!(
        !logs.contains("/api/stats/heartbeat"),
        "no line per request at the default level: {logs}"
    );
    assert!(!logs.contains(&token), "the token never reaches the logs");
    assert!(
        !logs.contains(token.split('.').nth(2).unwrap()),
        "nor its signature"
    );
}

pub(super) fn run_with_env(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = presence(&dir);
    cmd.args(args).envs(vars.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_and_status_2() {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/keys/rsa_public.pem");
    for (vars, variable) in [
        (vec![("SESSION_TTL", "soon")], "SESSION_TTL"),
        (vec![("HEARTBEAT_INTERVAL", "10m")], "HEARTBEAT_INTERVAL"),
        (vec![("LISTEN_ADDR", "localhost")], "LISTEN_ADDR"),
        (vec![("STATS_TIMEZONE", "Mars/Olympus")], "STATS_TIMEZONE"),
        (vec![("MODULES", "pms")], "MODULES"),
        (vec![("RATE_LIMIT", "many")], "RATE_LIMIT"),
        (vec![("RATE_LIMIT", "1,999999999999h")], "RATE_LIMIT"),
        (vec![("RATE_LIMIT", "4000000000,1h")], "RATE_LIMIT"),
        (vec![("JWT_ALGORITHMS", "HS257")], "JWT_ALGORITHMS"),
        (
            vec![("JWT_PUBLIC_KEY_FILE", key), ("JWT_ALGORITHMS", "HS256")],
            "JWT_ALGORITHMS",
        ),
        (
            vec![("JWT_SECRET", "s"), ("JWT_PUBLIC_KEY_FILE", key)],
            "JWT_SECRET",
        ),
        (
            vec![("JWT_PUBLIC_KEY_FILE", "/nonexistent.pem")],
            "JWT_PUBLIC_KEY_FILE",
        ),
        (vec![("METRICS_PUBLIC", "maybe")], "METRICS_PUBLIC"),
        (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (vec![("STORE", "cassandra")], "STORE"),
        (
            vec![("STORE", "redis"), ("REDIS_URL", "localhost:6379")],
            "REDIS_URL",
        ),
        (vec![("REDIS_KEY_PREFIX", "")], "REDIS_KEY_PREFIX"),
        (
            vec![("CORS_ALLOWED_ORIGINS", "not an origin")],
            "CORS_ALLOWED_ORIGINS",
        ),
        (
            vec![("STORE", "redis"), ("STATE_FILE", "state.json")],
            "STATE_FILE",
        ),
        (
            vec![("STATE_FILE", "/nonexistent/state.json")],
            "STATE_FILE",
        ),
    ] {
        let output = run_with_env(&vars, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "{variable} named: {stderr}");
    }
}

#[test]
fn help_documents_every_setting_and_its_variable() {
    let output = run_with_env(&[], &["serve", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "LISTEN_ADDR",
        "JWT_SECRET",
        "JWT_PUBLIC_KEY_FILE",
        "JWT_ALGORITHMS",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_LEEWAY",
        "JWT_USER_CLAIM",
        "JWT_ADMIN_ROLE",
        "JWT_REQUIRE_EXP",
        "HEARTBEAT_INTERVAL",
        "SESSION_TTL",
        "SWEEP_INTERVAL",
        "MODULES",
        "STATS_TIMEZONE",
        "STORE",
        "STATE_FILE",
        "CORS_ALLOWED_ORIGINS",
        "RATE_LIMIT",
        "METRICS_PUBLIC",
        "MAX_SESSIONS_PER_USER",
        "MAX_STREAMS_PER_USER",
        "MAX_STREAMS",
        "TOKEN_CACHE_MB",
        "MAX_CONNECTIONS",
        "MAX_CONCURRENT_REQUESTS",
        "REQUEST_TIMEOUT",
        "HEADER_READ_TIMEOUT",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} in --help"
        );
    }
    let with_secret = run_with_env(&[("JWT_SECRET", "do-not-print-me")], &["serve", "--help"]);
    assert!(
        !String::from_utf8_lossy(&with_secret.stdout).contains("do-not-print-me"),
        "--help hides the secret"
    );
    let top = run_with_env(&[], &["--help"]);
    let help = String::from_utf8_lossy(&top.stdout);
    assert!(help.contains("token") && help.contains("serve"), "{help}");
}

#[test]
fn token_subcommand_mints_a_token_the_service_accepts() {
    let output = run_with_env(
        &[("JWT_SECRET", "shared-secret"), ("JWT_ISSUER", "backend")],
        &["token", "--user", "42", "--role", "admin", "--ttl", "2h"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["backend"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"shared-secret").unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], 42);
    assert_eq!(claims["role"], "admin");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 7200);

    let output = run_with_env(&[], &["token", "--user", "42"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_SECRET"));
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sigterm-secret";
    let (mut child, addr, stderr) = start_serving(&dir, &[("JWT_SECRET", secret)]);
    let mut seen = Vec::new();

    let now = chrono::Utc::now().timestamp();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "1", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    let body = br#"{"module":"pms"}"#;
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "POST /api/stats/heartbeat HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..5]).unwrap();
    thread::sleep(Duration::from_millis(200));

    // The request is in flight: half its body has been sent.
    terminate(&child);
    next_line_matching(&stderr, &mut seen, |l| l.contains("shutting down"));
    thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "no new connections while draining"
    );

    stream.write_all(&body[5..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"activeUsers\":1"), "{response}");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

/// Starts the binary with `vars` and JSON logs; returns it, the address it
/// listens on, and its log lines.
pub(super) fn start_serving(
    dir: &tempfile::TempDir,
    vars: &[(&str, &str)],
) -> (Child, String, mpsc::Receiver<String>) {
    let json = [vars, &[("LOG_FORMAT", "json")]].concat();
    let (child, listening, stderr) = start_logging(dir, &json);
    let log: Value = serde_json::from_str(&listening).expect("LOG_FORMAT=json gives JSON lines");
    (child, log["addr"].as_str().unwrap().to_owned(), stderr)
}

/// Starts the binary with `vars`, logs on a pipe; returns it, its start-up
/// line, and the log lines after it.
fn start_logging(
    dir: &tempfile::TempDir,
    vars: &[(&str, &str)],
) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = presence(dir)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let listening = next_line_matching(&stderr, &mut seen, |l| l.contains("presence listening"));
    (child, listening, stderr)
}

#[test]
fn two_binaries_on_one_redis_share_sessions_on_redis_time() {
    let Some(server) = super::redis_server::RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let vars = [
        ("JWT_SECRET", "binary-redis-secret"),
        ("STORE", "redis"),
        ("REDIS_URL", url.as_str()),
    ];
    let (mut a, addr_a, logs_a) = start_serving(&dir, &vars);
    let (mut b, addr_b, logs_b) = start_serving(&dir, &vars);
    // Keep reading the logs so neither child blocks on a full pipe.
    for logs in [logs_a, logs_b] {
        thread::spawn(move || for _ in logs {});
    }
    let now = chrono::Utc::now().timestamp();
    let token = token_for("binary-redis-secret", "1");
    let json = |args: &[&str]| -> Value { serde_json::from_str(&curl(&token, args)).unwrap() };
    let beat = json(&[
        "-X",
        "POST",
        &format!("http://{addr_a}/api/stats/heartbeat"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"module":"ih"}"#,
    ]);
    assert_eq!(beat["success"], true, "{beat}");
    // The timestamp is Redis's clock, which on this machine is the wall clock.
    let at = chrono::DateTime::parse_from_rfc3339(beat["timestamp"].as_str().unwrap()).unwrap();
    assert!((at.timestamp() - now).abs() <= 5, "{at}");
    let modules = json(&[&format!("http://{addr_b}/api/stats/modules")]);
    assert_eq!(
        modules["innovation"]["activeNow"], 1,
        "instance B sees A's heartbeat: {modules}"
    );
    for child in [&mut a, &mut b] {
        terminate(child);
        assert!(wait_with_timeout(child, Duration::from_secs(15)).success());
    }
}

#[test]
fn no_token_secret_or_authorization_header_reaches_the_logs() {
    const SECRET: &str = "log-test-secret-that-must-never-be-printed";
    let dir = tempfile::tempdir().unwrap();
    // The most verbose logs there are, from every crate.
    let (mut child, addr, logs) =
        start_serving(&dir, &[("JWT_SECRET", SECRET), ("RUST_LOG", "trace")]);
    let token = token_for(SECRET, "log-user");
    let forged = token_for("someone-elses-secret", "log-user");
    let send = |args: &[&str]| {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "2"])
            .args(args)
            .status()
            .unwrap();
        assert!(
            status.success() || status.code() == Some(28),
            "curl {args:?}"
        );
    };
    let base = format!("http://{addr}");
    for bearer in [&token, &forged] {
        let auth = format!("Authorization: Bearer {bearer}");
        send(&[
            "-X",
            "POST",
            &format!("{base}/api/stats/heartbeat"),
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"module":"pms"}"#,
        ]);
        send(&[&format!("{base}/api/admin/sessions"), "-H", &auth]);
        send(&[&format!("{base}/api/stats/stream?access_token={bearer}")]);
        send(&[&format!("{base}/no/such/path?access_token={bearer}")]);
        send(&[
            "-X",
            "DELETE",
            &format!("{base}/api/stats/heartbeat"),
            "-H",
            &auth,
        ]);
    }
    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    let lines: Vec<String> = logs.iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("/api/stats/heartbeat")),
        "the requests were logged at all: {lines:?}"
    );
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    for secret in [
        SECRET.to_owned(),
        token.clone(),
        forged.clone(),
        signature(&token),
        signature(&forged),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(&secret)).collect();
        assert!(leaks.is_empty(), "leaked into the logs: {leaks:?}");
    }
    let bearer: Vec<&String> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("bearer "))
        .collect();
    assert!(
        bearer.is_empty(),
        "an Authorization value was logged: {bearer:?}"
    );
}

/// A token for `user` signed with `secret`, valid for five minutes.
pub(super) fn token_for(secret: &str, user: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": user, "exp": chrono::Utc::now().timestamp() + 300}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// `curl -s <args>` with `token`; what it printed.
pub(super) fn curl(token: &str, args: &[&str]) -> String {
    let output = Command::new("curl")
        .arg("-s")
        .args(args)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "curl {args:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn counts_survive_a_sigterm_and_restart_with_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "snapshot-secret";
    // Relative to the working directory, which is `dir`.
    let vars = [("JWT_SECRET", secret), ("STATE_FILE", "state.json")];
    let (mut first, addr, logs) = start_serving(&dir, &vars);
    let beat = |user: &str, module: &str| {
        let body = format!(r#"{{"module":"{module}"}}"#);
        let url = format!("http://{addr}/api/stats/heartbeat");
        let reply = curl(
            &token_for(secret, user),
            &[
                "-X",
                "POST",
                &url,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
            ],
        );
        assert!(reply.contains(r#""success":true"#), "{reply}");
    };
    beat("1", "pms");
    beat("2", "ih");
    beat("3", "pms");
    let url = format!("http://{addr}/api/stats/heartbeat");
    let status = curl(
        &token_for(secret, "3"),
        &["-X", "DELETE", &url, "-w", "%{http_code}"],
    );
    assert_eq!(status, "204");
    let counts = |addr: &str| -> Value {
        let url = format!("http://{addr}/api/stats/modules");
        let mut body: Value =
            serde_json::from_str(&curl(&token_for(secret, "observer"), &[&url])).unwrap();
        body.as_object_mut().unwrap().remove("timestamp");
        body
    };
    let before = counts(&addr);
    assert_eq!(
        before,
        serde_json::json!({
            "procurement": {"activeNow": 1, "idleNow": 0, "today": 2, "totalUsers": 2},
            "innovation": {"activeNow": 1, "idleNow": 0, "today": 1, "totalUsers": 1},
        })
    );

    terminate(&first);
    let mut seen = Vec::new();
    next_line_matching(&logs, &mut seen, |l| l.contains("snapshot saved"));
    assert_eq!(
        wait_with_timeout(&mut first, Duration::from_secs(15)).code(),
        Some(0)
    );
    assert!(dir.path().join("state.json").is_file());

    let (mut second, addr, logs) = start_serving(&dir, &vars);
    thread::spawn(move || for _ in logs {});
    assert_eq!(counts(&addr), before, "the restarted service");
    terminate(&second);
    assert_eq!(
        wait_with_timeout(&mut second, Duration::from_secs(15)).code(),
        Some(0)
    );
}

/// Starts the binary with the pretty log on a pipe; its address, read from
/// the start-up line.
fn start_pretty(
    dir: &tempfile::TempDir,
    vars: &[(&str, &str)],
) -> (Child, String, mpsc::Receiver<String>) {
    let (child, listening, stderr) = start_logging(dir, vars);
    let addr = listening
        .split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {listening:?}"))
        .to_owned();
    (child, addr, stderr)
}

/// `count` requests on one kept-alive connection: heartbeats, reads, a bad
/// token and an unknown path.
fn send_mixed_requests(addr: &str, token: &str, count: usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let body = r#"{"module":"pms"}"#;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for i in 0..count {
        let request = match i % 4 {
            0 => format!(
                "POST /api/stats/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            1 => format!(
                "GET /api/stats/modules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
            2 => "GET /api/stats/modules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n\r\n"
                .to_owned(),
            _ => "GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        };
        stream.write_all(request.as_bytes()).unwrap();
        // Read the head, then exactly the body, so the next answer is whole.
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
}

#[test]
fn the_default_log_has_no_line_per_request_and_no_colour_off_a_terminal() {
    const SECRET: &str = "quiet-log-secret-that-is-long-enough-for-hs256";
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = start_pretty(&dir, &[("JWT_SECRET", SECRET)]);
    send_mixed_requests(&addr, &token_for(SECRET, "quiet"), 200);
    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    let lines: Vec<String> = logs.iter().collect();
    assert!(
        lines.len() <= 4,
        "only shutdown lines after start-up, not one per request: {lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\x1b'), "colour codes on a pipe: {line:?}");
        assert!(!line.contains("/api/"), "a request was logged: {line:?}");
    }
}

#[test]
fn at_debug_every_request_has_a_line_with_its_latency_in_microseconds() {
    const SECRET: &str = "debug-log-secret-that-is-long-enough-for-hs256";
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = start_pretty(
        &dir,
        &[("JWT_SECRET", SECRET), ("RUST_LOG", "presence=debug")],
    );
    send_mixed_requests(&addr, &token_for(SECRET, "loud"), 8);
    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    let answered: Vec<String> = logs.iter().filter(|l| l.contains("answered")).collect();
    assert_eq!(answered.len(), 8, "{answered:#?}");
    for (line, (path, status)) in answered.iter().zip(
        [
            ("/api/stats/heartbeat", 200),
            ("/api/stats/modules", 200),
            ("/api/stats/modules", 401),
            ("/no/such/path", 404),
        ]
        .iter()
        .cycle(),
    ) {
        assert!(line.contains(&format!("path={path}")), "{line}");
        assert!(line.contains(&format!("status={status}")), "{line}");
        let latency = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("latency_us="))
            .unwrap_or_else(|| panic!("no latency_us in {line}"));
        assert!(latency.parse::<u64>().is_ok(), "{line}");
    }
}

/// One request on a new connection; the response head.
fn raw_head(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = String::new();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

#[test]
fn a_refused_cors_preflight_is_logged_once_per_origin_naming_the_setting() {
    const SECRET: &str = "cors-log-secret-that-is-long-enough-for-hs256";
    let dir = tempfile::tempdir().unwrap();
    // Written with a trailing slash, as people do: it still matches.
    let (mut child, addr, logs) = start_pretty(
        &dir,
        &[
            ("JWT_SECRET", SECRET),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com/"),
        ],
    );
    let preflight = |origin: &str| {
        raw_head(
            &addr,
            &format!(
                "OPTIONS /api/stats/heartbeat HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
            ),
        )
        .to_ascii_lowercase()
    };
    let allowed = preflight("https://app.example.com");
    assert!(
        allowed.contains("access-control-allow-origin: https://app.example.com"),
        "{allowed}"
    );
    for _ in 0..3 {
        let refused = preflight("https://evil.example");
        assert!(
            !refused.contains("access-control-allow-origin"),
            "{refused}"
        );
    }
    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    let warned: Vec<String> = logs
        .iter()
        .filter(|l| l.contains("CORS_ALLOWED_ORIGINS"))
        .collect();
    assert_eq!(warned.len(), 1, "once per origin: {warned:#?}");
    assert!(warned[0].contains("https://evil.example") && warned[0].contains("WARN"));
}
