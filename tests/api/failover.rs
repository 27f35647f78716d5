//! Redis fail-overs under load, on two release binaries: the Sentinel
//! master killed with SIGKILL, and one master of a Redis Cluster (users in
//! three shards) killed likewise. The load is that of `faults.rs` (forty
//! users beating every half second through two instances).
//!
//! What must hold (contract, section 7): only 200, 429 and 503 answers (a
//! 503 with `Retry-After`); within 10 s of the promotion every answer is
//! 2xx again; the counts are right within a heartbeat interval after that.
//! The measured times are printed (`--nocapture`) and recorded in
//! docs/scaling.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::binary::start_serving;
use super::faults::{BEAT, RECOVERY_SLACK, SECRET, Seen, free_addr, start_load, until_right};
use super::redis_server::{Cluster, SentinelSet};

/// Far above the load: every answer after a fail-over should be 2xx, and a
/// 429 would hide whether it is.
const NO_RATE_LIMIT: &str = "1000,10ms";

/// The promotion must happen within this after the kill.
const PROMOTION_LIMIT: Duration = Duration::from_secs(30);

/// Release binaries, killed on drop: a failed assertion leaves none
/// running.
struct Instances(Vec<std::process::Child>);

impl Drop for Instances {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts two instances with `vars`, runs the load, calls `kill` (which
/// kills a master and returns its port), waits for `promoted` to say the
/// new master's port, and checks what the clients saw. Returns (kill to
/// promotion, promotion to the last refused answer, promotion to right
/// counts).
async fn fail_over_under_load(
    what: &str,
    vars: &[(&str, &str)],
    kill: impl FnOnce() -> u16,
    promoted: impl Fn(u16) -> bool,
) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let addrs = [free_addr(), free_addr()];
    let serve = |addr: &str| {
        let mut all = vec![
            ("JWT_SECRET", SECRET),
            ("STORE", "redis"),
            ("RATE_LIMIT", NO_RATE_LIMIT),
            ("LISTEN_ADDR", addr),
        ];
        all.extend_from_slice(vars);
        let (child, _, logs) = start_serving(&dir, &all);
        std::thread::spawn(move || for _ in logs {});
        child
    };
    let _instances = Instances(vec![serve(&addrs[0]), serve(&addrs[1])]);
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let load = start_load(&addrs, &stop, &seen);
    until_right(&client, &addrs).await;
    tokio::time::sleep(BEAT * 2).await;
    assert!(
        seen.last_refused.lock().unwrap().is_none(),
        "all 2xx before the fail-over: {:?}",
        seen.statuses.lock().unwrap()
    );

    let killed_at = Instant::now();
    let old = kill();
    let promoted_at = loop {
        if promoted(old) {
            break Instant::now();
        }
        assert!(
            killed_at.elapsed() < PROMOTION_LIMIT,
            "{what}: no promotion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let right_after = until_right(&client, &addrs).await;
    // Ready again too: a load balancer that reads /readyz sends traffic.
    for addr in &addrs {
        loop {
            let ready = client.get(format!("http://{addr}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                promoted_at.elapsed() < Duration::from_secs(10),
                "{what}: /readyz on {addr} not 200 10 s after the promotion"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the load run on, so a late refusal would be seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let statuses = seen.statuses.lock().unwrap().clone();
    let last_refused_at = *seen.last_refused.lock().unwrap();
    let last_refused = last_refused_at.map_or(Duration::ZERO, |at| {
        at.saturating_duration_since(promoted_at)
    });
    let refused_for =
        last_refused_at.map_or(Duration::ZERO, |at| at.saturating_duration_since(killed_at));
    let promotion = promoted_at - killed_at;
    eprintln!(
        "{what}: answers {statuses:?}; promotion {promotion:?} after the kill; refusals \
         ended {refused_for:?} after the kill ({last_refused:?} after the promotion); counts \
         right {right_after:?} after the promotion"
    );
    seen.assert_answers(what);
    assert!(
        last_refused <= Duration::from_secs(10),
        "{what}: answers refused {last_refused:?} after the promotion"
    );
    assert!(
        right_after <= last_refused + BEAT + RECOVERY_SLACK,
        "{what}: counts right {right_after:?} after the promotion, answers all 2xx from {last_refused:?}"
    );
    (promotion, last_refused, right_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_master_killed_under_load() {
    let Some(mut set) = SentinelSet::start() else {
        return;
    };
    let sentinels = set.sentinel_list();
    let sentinel_ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
    let vars = [
        ("REDIS_SENTINELS", sentinels.as_str()),
        ("REDIS_SENTINEL_MASTER", SentinelSet::MASTER),
    ];
    fail_over_under_load(
        "Sentinel fail-over",
        &vars,
        || {
            set.master.kill();
            set.master.port
        },
        |old| SentinelSet::named_master(&sentinel_ports).is_some_and(|port| port != old),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let seeds = cluster.seed_list();
    let vars = [
        ("REDIS_CLUSTER_NODES", seeds.as_str()),
        ("REDIS_SHARDS", "3"),
    ];
    // The master of shard 0's slot: some users surely live there.
    let victim = cluster.master_of("{presence:0}");
    let cluster = std::sync::Mutex::new(&mut cluster);
    fail_over_under_load(
        "Cluster fail-over",
        &vars,
        || {
            cluster.lock().unwrap().node_mut(victim).kill();
            victim
        },
        |old| {
            cluster
                .lock()
                .unwrap()
                .serving_master(old, "{presence:0}")
                .is_some()
        },
    )
    .await;
}
