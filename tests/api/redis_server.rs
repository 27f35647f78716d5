//! Tests' own `redis-server`s, each on a free port, so tests are hermetic,
//! run in parallel, and can stop Redis to see what the service does.
//!
//! Without `redis-server` on PATH a local run skips the Redis tests with a
//! notice; under `CI=true` that is a failure, never a skip.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process on its own port; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Where a durable server keeps its append-only file.
    durable: Option<tempfile::TempDir>,
}

/// Whether Redis tests can run here; panics under CI when they cannot.
pub fn available() -> bool {
    static CHECK: OnceLock<bool> = OnceLock::new();
    *CHECK.get_or_init(|| {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is not on PATH and CI=true: the Redis tests must run (apt-get install redis-server)"
            );
            eprintln!("NOTICE: redis-server not found; skipping the Redis store tests (install it: apt-get install redis-server)");
        }
        found
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server on a free port, or `None` where Redis is not
    /// installed (and this is not CI).
    pub fn start() -> Option<Self> {
        Self::launch(false)
    }

    /// Like [`start`](Self::start), but every write is in an append-only
    /// file synced at once, so a killed server comes back with its data,
    /// as a production Redis with `appendfsync always` would.
    pub fn start_durable() -> Option<Self> {
        Self::launch(true)
    }

    fn launch(durable: bool) -> Option<Self> {
        if !available() {
            return None;
        }
        let mut server = Self {
            port: free_port(),
            child: None,
            durable: durable.then(|| tempfile::tempdir().unwrap()),
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.durable {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once, as a crash or network loss would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server shared by the store-contract tests, each using its own key
/// prefix. It lives as long as the test process: a watchdog shell ends it
/// when this process is gone, since statics are never dropped.
pub fn shared_url() -> Option<String> {
    static SHARED: OnceLock<Option<String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if !available() {
                return None;
            }
            let port = free_port();
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & r=$!; \
                 while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $r",
                parent = std::process::id()
            );
            #[allow(clippy::zombie_processes, reason = "the watchdog ends itself after this process")]
            Command::new("sh").arg("-c").arg(script).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("sh");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "shared redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(format!("redis://127.0.0.1:{port}"))
        })
        .clone()
}

/// A key prefix no other test in this process uses.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
