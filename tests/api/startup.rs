//! What the binary decides at start-up, before it serves a request: when
//! demo mode may run, what a `STATE_FILE` may be, the open-file limit, and
//! the warnings an operator must see (no `JWT_AUDIENCE`, a Redis that may
//! evict keys). Run with `cargo test --release`, as `binary.rs`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::binary::{lines, presence, wait_with_timeout};
use super::redis_server::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_presence");

/// A secret long enough not to be warned about.
const SECRET: &str = "startup-test-secret-long-enough-for-hs256";

/// A running binary, its address (when it got that far), and every line
/// it wrote to stderr and stdout so far.
struct Started {
    child: Child,
    addr: Option<String>,
    stderr: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// Spawns `cmd` with JSON logs; waits until it listens, or exits (a
/// configuration error), or 20 s pass.
fn start(mut cmd: Command) -> Started {
    let mut child = cmd
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut addr = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if line.contains("presence listening") {
                    let log: Value = serde_json::from_str(&line).unwrap();
                    addr = log["addr"].as_str().map(str::to_owned);
                    seen.push(line);
                    break;
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Started {
        child,
        addr,
        stderr,
        stdout,
        seen,
    }
}

impl Started {
    /// SIGTERM, then every line it wrote (stderr, then stdout); panics
    /// unless it exits 0 within 15 s.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        // The signal handler is installed when the accept loop first waits
        // for the shutdown signal, a moment after "presence listening"; a
        // SIGTERM sent before that finds the default action (death by
        // signal). An answer, and a moment more for a loaded machine, make
        // sure it is in place.
        if let Some(addr) = &self.addr {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "exit status");
        let mut stderr = self.seen;
        stderr.extend(self.stderr.iter());
        (stderr, self.stdout.iter().collect())
    }
}

/// The binary's exit status and stderr for these settings, when it must
/// exit by itself within 10 s (a configuration error).
fn refused(vars: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = presence(&dir);
    cmd.args(args).envs(vars.iter().copied());
    exits_by_itself(cmd)
}

/// `cmd`'s exit status and stderr, when it must exit by itself within 10 s.
fn exits_by_itself(mut cmd: Command) -> (Option<i32>, String) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

fn assert_config_error(vars: &[(&str, &str)], args: &[&str], variable: &str) {
    let (code, stderr) = refused(vars, args);
    assert_eq!(code, Some(2), "{vars:?} {args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(variable), "{variable} named: {stderr}");
}

#[test]
fn without_a_key_demo_mode_needs_loopback_and_the_memory_store_or_demo_true() {
    // Refused: a forgotten secret must not open a shared store or a
    // reachable address. (These exit before they listen anywhere.)
    for vars in [
        vec![("STORE", "redis")],
        vec![("LISTEN_ADDR", "0.0.0.0:0")],
        vec![("LISTEN_ADDR", "[::]:0")],
        vec![("LISTEN_ADDR", "0.0.0.0:0"), ("STORE", "redis")],
        vec![("LISTEN_ADDR", "0.0.0.0:0"), ("DEMO", "false")],
    ] {
        assert_config_error(&vars, &[], "JWT_SECRET");
    }

    // DEMO=true (or --demo) runs it on purpose. The address stays on
    // loopback here, as every test's; the shared store is what is allowed.
    let dir = tempfile::tempdir().unwrap();
    for (vars, args) in [
        (vec![("DEMO", "true")], vec![]),
        (vec![], vec!["serve", "--demo"]),
    ] {
        let mut cmd = presence(&dir);
        cmd.envs(vars.iter().copied())
            .args(&args)
            .env("STORE", "redis")
            // Nothing listens there: the service starts all the same.
            .env("REDIS_URL", "redis://127.0.0.1:1");
        let started = start(cmd);
        assert!(started.addr.is_some(), "serving: {:?}", started.seen);
        let (stderr, stdout) = started.stop();
        assert!(stderr.iter().any(|l| l.contains("demo mode")), "{stderr:?}");
        assert!(
            stdout.iter().any(|l| l.contains("Demo token")),
            "{stdout:?}"
        );
    }

    // On loopback with the memory store, as before: no setting needed.
    let started = start(presence(&dir));
    assert!(started.addr.is_some(), "serving: {:?}", started.seen);
    started.stop();
}

#[test]
fn without_jwt_audience_a_warning_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = presence(&dir);
    cmd.env("JWT_SECRET", SECRET);
    let (stderr, _) = start(cmd).stop();
    let warnings: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("JWT_AUDIENCE"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr:?}");
    assert!(warnings[0].contains("\"WARN\""), "{warnings:?}");

    let mut cmd = presence(&dir);
    cmd.env("JWT_SECRET", SECRET)
        .env("JWT_AUDIENCE", "presence");
    let (stderr, _) = start(cmd).stop();
    assert!(
        !stderr.iter().any(|l| l.contains("JWT_AUDIENCE")),
        "{stderr:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_state_file_that_is_not_a_regular_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO blocks whoever opens it for reading until a writer comes; the
    // device never ends. Neither is a snapshot, and neither may be renamed.
    let fifo = dir.path().join("state.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for path in [fifo.to_str().unwrap(), "/dev/zero"] {
        assert_config_error(&[("STATE_FILE", path)], &[], "STATE_FILE");
    }
    assert!(fifo.exists(), "left where it was");
}

/// The binary under `prlimit --nofile=SOFT:HARD`, in `dir`, with a clean
/// configuration (as [`presence`]).
fn under_file_limit(dir: &tempfile::TempDir, soft: u32, hard: u32) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(BIN)
        .current_dir(dir.path())
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("LISTEN_ADDR", "127.0.0.1:0");
    cmd
}

/// Whether `prlimit` is missing (then the open-file limit tests skip,
/// except under CI, where it must be there).
fn prlimit_missing() -> bool {
    if Command::new("prlimit").arg("--version").output().is_ok() {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prlimit (util-linux) is needed under CI"
    );
    eprintln!("NOTICE: prlimit not found; skipping the open-file limit test");
    true
}

#[test]
fn the_connection_cap_fits_the_open_file_limit() {
    if prlimit_missing() {
        return;
    }
    // (soft, hard, the limit the service runs with)
    for (soft, hard, limit) in [(256, 256, 256), (256, 1024, 1024)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = under_file_limit(&dir, soft, hard);
        cmd.env("JWT_SECRET", SECRET)
            .env("JWT_AUDIENCE", "presence")
            // Idle connections stay open for the length of the test.
            .env("HEADER_READ_TIMEOUT", "60s");
        let started = start(cmd);
        let addr = started.addr.clone().expect("serving");
        let mut first = TcpStream::connect(&addr).unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let health = |conn: &mut TcpStream| {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert!(health(&mut first).starts_with("HTTP/1.1 200"));
        // More idle connections than the limit has descriptors.
        let idle: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        // Failed accepts are logged (and retried) once a second.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(health(&mut first).starts_with("HTTP/1.1 200"));
        drop(idle);
        let (stderr, _) = started.stop();
        let exhausted: Vec<&String> = stderr
            .iter()
            .filter(|l| l.contains("Too many open files") || l.contains("accept failed"))
            .collect();
        assert!(
            exhausted.is_empty(),
            "soft {soft}, hard {hard}: ran out of descriptors: {exhausted:?}"
        );
        let cap: Vec<&String> = stderr
            .iter()
            .filter(|l| l.contains("MAX_CONNECTIONS"))
            .collect();
        assert_eq!(cap.len(), 1, "one line says so: {stderr:?}");
        assert!(
            cap[0].contains(&format!("\"open_files\":{limit}")),
            "{cap:?}"
        );
    }
}

#[test]
fn a_file_limit_too_low_for_64_connections_stops_start_up() {
    if prlimit_missing() {
        return;
    }
    // 50 descriptors leave none for connections after the 64 reserved;
    // 127 leave 63. Either used to start with a cap of 1 (or 63) and a
    // `/healthz` that one idle client could hold.
    for limit in [50, 127] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = under_file_limit(&dir, limit, limit);
        cmd.env("JWT_SECRET", SECRET)
            .env("JWT_AUDIENCE", "presence");
        let (code, stderr) = exits_by_itself(cmd);
        assert_eq!(code, Some(2), "limit {limit}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("MAX_CONNECTIONS") && stderr.contains("ulimit -n"),
            "names the setting and how to raise the limit: {stderr}"
        );
    }
}

#[test]
fn out_of_range_durations_and_spinning_intervals_stop_start_up() {
    for (variable, value) in [
        // Each used to start (or panic with status 101 on the first
        // heartbeat or timer) instead of refusing the value.
        ("RATE_LIMIT", "1,999999999999h"),
        ("SESSION_TTL", "999999999999h"),
        ("SWEEP_INTERVAL", "999999999999h"),
        ("JWT_LEEWAY", "999999999999h"),
        ("REQUEST_TIMEOUT", "999999999999h"),
        ("HEADER_READ_TIMEOUT", "999999999999h"),
        ("HEARTBEAT_INTERVAL", "999999999999h"),
        // A sweep every nanosecond spins a core.
        ("SWEEP_INTERVAL", "1ns"),
        ("SWEEP_INTERVAL", "99ms"),
        // A heartbeat cadence under a second has every client beat as fast
        // as it can.
        ("HEARTBEAT_INTERVAL", "1ns"),
        ("HEARTBEAT_INTERVAL", "999ms"),
    ] {
        assert_config_error(&[(variable, value)], &[], variable);
    }
}

#[test]
fn a_redis_that_may_evict_keys_is_warned_about() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let policy = |value: &str| {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(value)
            .query::<()>(&mut conn)
            .unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut cmd = presence(&dir);
        cmd.env("JWT_SECRET", SECRET)
            .env("JWT_AUDIENCE", "presence")
            .env("STORE", "redis")
            .env("REDIS_URL", &url);
        let started = start(cmd);
        assert!(started.addr.is_some(), "serving: {:?}", started.seen);
        // The check runs beside serving; give it a moment.
        std::thread::sleep(Duration::from_millis(1000));
        started.stop().0
    };
    policy("allkeys-lru");
    let stderr = run();
    let warned: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("maxmemory-policy"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr:?}");
    assert!(
        warned[0].contains("\"WARN\"")
            && warned[0].contains("allkeys-lru")
            && warned[0].contains("noeviction"),
        "{warned:?}"
    );

    policy("noeviction");
    let stderr = run();
    assert!(
        !stderr.iter().any(|l| l.contains("maxmemory-policy")),
        "{stderr:?}"
    );
}

/// The settings of an instance on `url` with `shards` shards under `prefix`.
fn sharded<'a>(url: &'a str, shards: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("JWT_SECRET", SECRET),
        ("JWT_AUDIENCE", "presence"),
        ("STORE", "redis"),
        ("REDIS_URL", url),
        ("REDIS_SHARDS", shards),
        ("REDIS_KEY_PREFIX", prefix),
    ]
}

// The shard count is recorded in Redis by the first instance to start; an
// instance configured with another exits with status 2, naming
// REDIS_SHARDS. Data from before shards counts as one shard's.
#[test]
fn another_shard_count_than_redis_records_stops_start_up() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let vars = |shards, prefix| sharded(&url, shards, prefix);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = presence(&dir);
    cmd.envs(vars("2", "sharded"));
    let started = start(cmd);
    assert!(started.addr.is_some(), "serving: {:?}", started.seen);
    // The check runs beside serving; give it a moment to record.
    std::thread::sleep(Duration::from_millis(1000));
    started.stop();

    let (code, stderr) = refused(&vars("3", "sharded"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("REDIS_SHARDS: is 3, but Redis holds") && stderr.contains("in 2 shard(s)"),
        "{stderr}"
    );

    // A deployment from before shards: its keys under `{prefix}`.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg("{legacy}:day")
        .arg("2026-12-04")
        .query::<()>(&mut conn)
        .unwrap();
    let (code, stderr) = refused(&vars("2", "legacy"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("in 1 shard(s)"), "{stderr}");
}

// Redis loses its data (FLUSHALL, or a restart without persistence) under
// a running instance: it records its shard count again, so an instance
// configured with another still refuses to start.
#[test]
fn after_redis_loses_its_data_the_running_instance_records_its_shard_count_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let vars = |shards| {
        let mut vars = sharded(&url, shards, "flushed");
        vars.push(("SWEEP_INTERVAL", "1s"));
        vars
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = presence(&dir);
    cmd.envs(vars("2"));
    let started = start(cmd);
    assert!(started.addr.is_some(), "serving: {:?}", started.seen);
    std::thread::sleep(Duration::from_millis(1000));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap();
    // The running instance's next sweep writes its count back.
    let waited = std::time::Instant::now();
    while redis::cmd("GET")
        .arg("{flushed}:shards")
        .query::<Option<String>>(&mut conn)
        .unwrap()
        .is_none()
    {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the shard count was not recorded again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, stderr) = refused(&vars("3"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("REDIS_SHARDS: is 3, but Redis holds") && stderr.contains("in 2 shard(s)"),
        "{stderr}"
    );
    let (stderr, _) = started.stop();
    assert!(
        !stderr.iter().any(|l| l.contains("\"ERROR\"")),
        "{stderr:?}"
    );
}
