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
    /// Whether every write goes to an append-only file, synced at once.
    durable: bool,
    /// Its `--dir`: whatever it writes (a durable server's append-only
    /// file; an RDB, should it ever save or be made a replica) lands here,
    /// not in its working directory, which is the repository's root.
    dir: tempfile::TempDir,
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
            durable,
            dir: tempfile::tempdir().unwrap(),
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
        command.arg("--dir").arg(self.dir.path());
        if self.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
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
/// when this process is gone, since statics are never dropped, and then
/// removes the temporary directory it ran in (as [`RedisServer`]'s, so
/// nothing it writes lands in the repository).
pub fn shared_url() -> Option<String> {
    static SHARED: OnceLock<Option<String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if !available() {
                return None;
            }
            let port = free_port();
            let script = format!(
                "d=$(mktemp -d) || exit 1; \
                 redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir \"$d\" >/dev/null 2>&1 & r=$!; \
                 while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $r; wait $r; rm -rf \"$d\"",
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

/// A port that is free, and whose cluster bus port (port + 10000) is too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Ends `pid` when this test process is gone, however it ends (a panic in
/// a static's set-up, an abort): nothing a test starts outlives it.
fn reap_with_this_process(pid: u32) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    #[allow(clippy::zombie_processes, reason = "the watchdog ends itself")]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` (node or sentinel) with its own arguments; killed on
/// drop, or by a watchdog when the test process ends first.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        reap_with_this_process(child.id());
        wait_listening(port);
        Self {
            port,
            child: Some(child),
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `ready` every 100 ms; panics after 30 s waiting for `what`.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `127.0.0.1:port` of each node.
fn addresses(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect()
}

/// `redis://127.0.0.1:port` of each node.
fn urls(nodes: &[Node]) -> Vec<String> {
    addresses(nodes)
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect()
}

/// `redis-cli -p port args...`: what it printed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn data_node_args(port: &str, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        // A replica syncs at once, not after the default 5 s wait for
        // others, so it can take over soon after the set starts.
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// How long a sentinel waits before it calls a silent master down, and a
/// cluster node a silent peer: short, so fail-over tests stay short.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One master, one replica and three sentinels (quorum two) watching them
/// as [`SentinelSet::MASTER`].
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub const MASTER: &'static str = "presence-master";

    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (m, r) = (free_port(), free_port());
        let master = Node::spawn(m, &as_strs(&data_node_args(&m.to_string(), dir.path())));
        let mut replica_args = data_node_args(&r.to_string(), dir.path());
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
        let replica = Node::spawn(r, &as_strs(&replica_args));
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {name} 127.0.0.1 {m} 2\n\
                         sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {name} 10000\n",
                        dir = dir.path().display(),
                        name = Self::MASTER,
                    ),
                )
                .unwrap();
                Node::spawn(port, &[conf.to_str().unwrap(), "--sentinel"])
            })
            .collect();
        let set = Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        set.wait_ready();
        Some(set)
    }

    /// Waits until the replica is in sync and the sentinels know each
    /// other and the replica, so a fail-over can happen.
    pub fn wait_ready(&self) {
        wait_until("the sentinels to get ready", || {
            let synced =
                cli(self.replica.port, &["info", "replication"]).contains("master_link_status:up");
            let quorum = self.sentinels.iter().all(|s| {
                cli(s.port, &["sentinel", "ckquorum", Self::MASTER]).starts_with("OK")
                    && cli(s.port, &["sentinel", "replicas", Self::MASTER])
                        .contains(&self.replica.port.to_string())
            });
            synced && quorum
        });
    }

    /// `host:port,...` of the sentinels, as `REDIS_SENTINELS` takes them.
    pub fn sentinel_list(&self) -> String {
        addresses(&self.sentinels).join(",")
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        urls(&self.sentinels)
    }

    /// The master's port as the first of `sentinels` (ports) names it.
    pub fn named_master(sentinels: &[u16]) -> Option<u16> {
        let out = cli(
            sentinels[0],
            &["sentinel", "get-master-addr-by-name", Self::MASTER],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }
}

/// Three masters and three replicas, made a cluster by `redis-cli
/// --cluster create`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let port = free_cluster_port();
                let mut args = data_node_args(&port.to_string(), dir.path());
                args.extend([
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    DOWN_AFTER_MS.to_string(),
                ]);
                Node::spawn(port, &as_strs(&args))
            })
            .collect();
        let addrs = addresses(&nodes);
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_ok();
        Some(cluster)
    }

    /// Waits until every live node says the cluster is ok and knows every
    /// slot's master, and every replica is in sync (so it can take over).
    pub fn wait_ok(&self) {
        wait_until("the cluster to become ok", || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = cli(n.port, &["cluster", "info"]);
                let replication = cli(n.port, &["info", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            })
        });
    }

    /// `host:port,...` of every node, as `REDIS_CLUSTER_NODES` takes them.
    pub fn seed_list(&self) -> String {
        addresses(&self.nodes).join(",")
    }

    pub fn seed_urls(&self) -> Vec<String> {
        urls(&self.nodes)
    }

    /// The port of the master serving `key`'s slot, as a live node says.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key).expect("a master serves the key")
    }

    /// The master serving `key` once it is another than `old` and every
    /// live node says the cluster is ok again.
    pub fn serving_master(&self, old: u16, key: &str) -> Option<u16> {
        let ok = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"));
        self.try_master_of(key).filter(|port| ok && *port != old)
    }

    fn try_master_of(&self, key: &str) -> Option<u16> {
        let live = self.nodes.iter().find(|n| n.is_running()).unwrap().port;
        let slot: u16 = cli(live, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(live, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let addr = fields[1].split('@').next().unwrap();
                return addr.rsplit_once(':').unwrap().1.parse().ok();
            }
        }
        None
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }
}

/// A Sentinel set shared by the store-contract tests (each with its own
/// key prefix) for as long as the test process lives.
pub fn shared_sentinels() -> Option<&'static SentinelSet> {
    static SHARED: OnceLock<Option<SentinelSet>> = OnceLock::new();
    SHARED.get_or_init(SentinelSet::start).as_ref()
}

/// A cluster shared by the store-contract tests, likewise.
pub fn shared_cluster() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED.get_or_init(Cluster::start).as_ref()
}
