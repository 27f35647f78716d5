//! Faults under load, on two release binaries sharing one Redis: Redis
//! killed and restarted, then one instance killed with SIGKILL and restarted
//! while the other serves on.
//!
//! Forty users beat every [`BEAT`] (the browser client's 45 s, faster), each
//! through "their" instance, and through the other one when theirs refuses
//! the connection, as a load balancer would. Every answer must be 200, 429
//! or 503, and after each recovery the counts must be right again within a
//! heartbeat interval (plus the time to notice, see [`RECOVERY_SLACK`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::binary::{start_serving, token_for};
use super::redis_server::RedisServer;

pub(super) const USERS: usize = 40;
pub(super) const BEAT: Duration = Duration::from_millis(500);
/// Allowed beyond one heartbeat interval for the counts to be right after
/// a recovery: the service's reconnect, and scheduling on a busy CI machine.
pub(super) const RECOVERY_SLACK: Duration = Duration::from_secs(2);
pub(super) const SECRET: &str = "faults-secret-faults-secret-faults";

/// What the simulated clients saw.
#[derive(Default)]
pub(super) struct Seen {
    /// HTTP answers by status.
    pub(super) statuses: Mutex<BTreeMap<u16, u64>>,
    /// Beats whose first instance refused the connection, sent to the other.
    pub(super) failovers: AtomicU64,
    /// Beats that neither instance answered.
    pub(super) unanswered: AtomicU64,
    /// When the latest answer that was not 2xx came.
    pub(super) last_refused: Mutex<Option<Instant>>,
    /// 503 answers without `Retry-After`.
    pub(super) without_retry_after: AtomicU64,
}

/// Users beating until `stop`, through `addrs` (user i prefers `addrs[i % 2]`).
impl Seen {
    /// Only 200, 429 or 503 answers, a 503 always with `Retry-After`, and
    /// every beat answered by one instance or the other.
    pub(super) fn assert_answers(&self, what: &str) {
        let statuses = self.statuses.lock().unwrap().clone();
        assert!(
            statuses.keys().all(|s| [200, 429, 503].contains(s)),
            "{what}: only 200, 429 or 503: {statuses:?}"
        );
        assert_eq!(
            self.without_retry_after.load(Ordering::Relaxed),
            0,
            "{what}: every 503 says Retry-After"
        );
        assert_eq!(
            self.unanswered.load(Ordering::Relaxed),
            0,
            "{what}: one instance always answered"
        );
    }
}

pub(super) fn start_load(
    addrs: &[String; 2],
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    (0..USERS)
        .map(|user| {
            let token = token_for(SECRET, &format!("u{user}"));
            let module = if user % 2 == 0 { "pms" } else { "ih" };
            let body = format!(r#"{{"module":"{module}"}}"#);
            let (client, addrs, stop, seen) =
                (client.clone(), addrs.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut answered = false;
                    for attempt in 0..2 {
                        let addr = &addrs[(user + attempt) % 2];
                        let sent = client
                            .post(format!("http://{addr}/api/stats/heartbeat"))
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        if let Ok(response) = sent {
                            if !response.status().is_success() {
                                *seen.last_refused.lock().unwrap() = Some(Instant::now());
                            }
                            if response.status() == 503
                                && !response.headers().contains_key("retry-after")
                            {
                                seen.without_retry_after.fetch_add(1, Ordering::Relaxed);
                            }
                            *seen
                                .statuses
                                .lock()
                                .unwrap()
                                .entry(response.status().as_u16())
                                .or_default() += 1;
                            answered = true;
                            break;
                        }
                        seen.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    if !answered {
                        seen.unanswered.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(BEAT).await;
                }
            })
        })
        .collect()
}

/// The module counts as `addr` serves them, or `None` if it cannot now.
pub(super) async fn counts(client: &reqwest::Client, addr: &str) -> Option<Value> {
    let response = client
        .get(format!("http://{addr}/api/stats/modules"))
        .bearer_auth(token_for(SECRET, "observer"))
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.json().await.ok()
}

/// Every user active in their module and counted today and in total.
pub(super) fn right(counts: &Value) -> bool {
    let half = USERS as u64 / 2;
    ["procurement", "innovation"].iter().all(|key| {
        ["activeNow", "today", "totalUsers"]
            .iter()
            .all(|field| counts[key][field].as_u64() == Some(half))
    })
}

/// How long until both instances serve the right counts; panics after 10 s.
pub(super) async fn until_right(client: &reqwest::Client, addrs: &[String]) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for addr in addrs {
            all &= counts(client, addr).await.is_some_and(|c| right(&c));
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "counts not right 10 s after recovery"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(super) fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_and_a_killed_instance_under_load() {
    let Some(mut redis) = RedisServer::start_durable() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let addrs = [free_addr(), free_addr()];
    let serve = |addr: &str| {
        let vars = [
            ("JWT_SECRET", SECRET),
            ("STORE", "redis"),
            ("REDIS_URL", url.as_str()),
            ("LISTEN_ADDR", addr),
        ];
        let (child, _, logs) = start_serving(&dir, &vars);
        // Keep reading its logs so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in logs {});
        child
    };
    let mut a = serve(&addrs[0]);
    let mut b = serve(&addrs[1]);
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let load = start_load(&addrs, &stop, &seen);
    until_right(&client, &addrs).await;

    // Redis dies (SIGKILL) under load, stays away for four beats, returns.
    let unavailable = || {
        seen.statuses
            .lock()
            .unwrap()
            .get(&503)
            .copied()
            .unwrap_or(0)
    };
    let before = unavailable();
    redis.stop();
    tokio::time::sleep(BEAT * 4).await;
    assert!(unavailable() > before, "heartbeats without Redis are 503");
    redis.restart();
    let after_redis = until_right(&client, &addrs).await;

    // Instance A dies (SIGKILL) under load; its users go to B meanwhile.
    a.kill().unwrap();
    a.wait().unwrap();
    let failovers_before = seen.failovers.load(Ordering::Relaxed);
    tokio::time::sleep(BEAT * 4).await;
    assert!(
        seen.failovers.load(Ordering::Relaxed) > failovers_before,
        "A's users were refused and went to B"
    );
    let via_b = counts(&client, &addrs[1]).await.expect("B serves on");
    assert!(right(&via_b), "B's counts stay right without A: {via_b}");
    a = serve(&addrs[0]);
    let after_restart = until_right(&client, &addrs).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let statuses = seen.statuses.lock().unwrap().clone();
    eprintln!(
        "faults under load: answers {statuses:?}, failovers {}, counts right {after_redis:?} after Redis returned and {after_restart:?} after A restarted",
        seen.failovers.load(Ordering::Relaxed)
    );
    seen.assert_answers("faults under load");
    for (what, took) in [
        ("Redis returned", after_redis),
        ("A restarted", after_restart),
    ] {
        assert!(
            took <= BEAT + RECOVERY_SLACK,
            "counts right {took:?} after {what}, more than a beat"
        );
    }
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
