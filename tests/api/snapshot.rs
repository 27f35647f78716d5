//! `STATE_FILE`: the memory store kept across restarts. In-process, on one
//! `ManualClock` shared by two apps: a restart is stopping one app (as
//! SIGTERM does, which saves the last snapshot) and starting another on the
//! same file, some time later.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence::clock::{Clock, ManualClock};
use presence::domain::UserId;
use presence::store::{Heartbeat, SessionStore};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::helpers::{SECRET, TestApp, build_state_on, spawn_app_on, start_time};

/// A temporary directory with the state file in it.
struct StateDir {
    dir: tempfile::TempDir,
}

impl StateDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// The `presence serve` arguments for this state file, plus `extra`.
    fn args(&self, extra: &[&'static str]) -> Vec<String> {
        let mut args: Vec<String> = ["--jwt-secret", SECRET, "--state-file"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(self.file().to_str().unwrap().to_owned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    async fn app(&self, clock: &Arc<ManualClock>, extra: &[&'static str]) -> TestApp {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_app_on(&args, clock.clone()).await
    }

    /// Names of the files in the directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn new_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

/// Collects what the current thread logs (the in-process app runs on the
/// test's thread) while it is alive.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// The lines logged at WARN.
    fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" WARN "))
            .map(str::to_owned)
            .collect()
    }
}

/// What users and admins see of the state, less the response times.
async fn everything_visible(app: &TestApp) -> Value {
    let admin = app.admin_token("root");
    let mut modules = app.modules().await;
    let (_, mut sessions) = app.get("/api/admin/sessions", &admin).await;
    let (_, mut viewers) = app.get("/api/presence/resources/request:1", &admin).await;
    let (_, mut history) = app.get("/api/admin/history?window=1h", &admin).await;
    for body in [&mut modules, &mut sessions, &mut viewers, &mut history] {
        body.as_object_mut().unwrap().remove("timestamp");
    }
    json!({"modules": modules, "sessions": sessions, "viewers": viewers, "history": history})
}

fn session_users(visible: &Value) -> Vec<&str> {
    visible["sessions"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["userId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_today_total_live_sessions_viewers_and_history() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    before
        .beat_ok(
            "1",
            json!({"module": "pms", "clientId": "tab-a", "page": "/requests", "resource": "request:1"}),
        )
        .await;
    before.beat_ok("2", json!({"module": "ih"})).await;
    before.beat_ok("3", json!({"module": "pms"})).await;
    clock.advance(Duration::from_secs(10));
    assert_eq!(before.leave("3", "").await, StatusCode::NO_CONTENT);
    let seen = everything_visible(&before).await;
    assert_eq!(before.counts("procurement").await, [1, 2, 2]);
    assert_eq!(before.counts("innovation").await, [1, 1, 1]);
    assert_eq!(session_users(&seen), ["2", "1"]);
    before.stop().await;
    assert!(dir.file().exists(), "saved at shutdown");

    clock.advance(Duration::from_secs(30));
    let after = dir.app(&clock, &[]).await;
    assert_eq!(everything_visible(&after).await, seen);

    // The sessions carry on: user 1's next beat continues the same session,
    // and nobody is counted twice.
    after
        .beat_ok("1", json!({"module": "pms", "clientId": "tab-a"}))
        .await;
    assert_eq!(after.counts("procurement").await, [1, 2, 2]);
    let (_, sessions) = after
        .get("/api/admin/sessions", &after.admin_token("root"))
        .await;
    assert_eq!(
        sessions["sessions"][0]["startedAt"],
        json!("2026-01-14T09:30:00.000Z")
    );
}

#[tokio::test]
async fn sessions_that_expired_while_the_service_was_down_are_dropped() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    before.beat_ok("1", json!({"module": "pms"})).await;
    clock.advance(Duration::from_secs(60));
    before.beat_ok("1", json!({"module": "pms"})).await;
    clock.advance(Duration::from_secs(200));
    before.beat_ok("2", json!({"module": "pms"})).await;
    before.stop().await;

    // Down for two minutes: user 1's session (last beat 5m20s ago) expired,
    // user 2's (2m ago) is still live.
    clock.advance(Duration::from_secs(120));
    let after = dir.app(&clock, &[]).await;
    assert_eq!(after.counts("procurement").await, [1, 2, 2]);
    let visible = everything_visible(&after).await;
    assert_eq!(session_users(&visible), ["2"]);
    // The expired session's end is in the history, as if swept: 60 s long.
    assert_eq!(
        visible["history"]["modules"]["procurement"]["averageSessionSeconds"],
        json!(60.0)
    );
}

#[tokio::test]
async fn a_snapshot_from_yesterday_keeps_total_users_but_not_today() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    before.beat_ok("1", json!({"module": "pms"})).await;
    before.beat_ok("2", json!({"module": "pms"})).await;
    before.stop().await;

    clock.advance(Duration::from_secs(24 * 3600));
    let after = dir.app(&clock, &[]).await;
    assert_eq!(after.counts("procurement").await, [0, 0, 2]);
    after.beat_ok("1", json!({"module": "pms"})).await;
    assert_eq!(after.counts("procurement").await, [1, 1, 2]);
}

#[tokio::test]
async fn a_session_live_across_midnight_counts_today_after_a_restart() {
    let dir = StateDir::new();
    let clock = new_clock();
    // 23:00: user 2 beats once (expired long before midnight).
    clock.advance(Duration::from_secs(13 * 3600 + 30 * 60));
    let before = dir.app(&clock, &[]).await;
    before.beat_ok("2", json!({"module": "pms"})).await;
    // 23:58: user 1 beats, and the service stops.
    clock.advance(Duration::from_secs(58 * 60));
    before.beat_ok("1", json!({"module": "pms"})).await;
    assert_eq!(before.counts("procurement").await, [1, 2, 2]);
    before.stop().await;

    // 00:01: user 1 is still live, so here today; user 2 is not.
    clock.advance(Duration::from_secs(3 * 60));
    let after = dir.app(&clock, &[]).await;
    assert_eq!(after.counts("procurement").await, [1, 1, 2]);
}

/// A real snapshot of users 1 (pms) and 2 (ih), as bytes.
async fn a_snapshot() -> Vec<u8> {
    let dir = StateDir::new();
    let app = dir.app(&new_clock(), &[]).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    app.beat_ok("2", json!({"module": "ih"})).await;
    app.stop().await;
    std::fs::read(dir.file()).unwrap()
}

/// Starts an app on a state file holding `content`: it must start clean,
/// with the file moved aside (intact) and a warning containing `why`; and
/// what it then saves must be restorable.
/// After a start from an unusable file: nothing restored, the file set
/// aside as `state.json.corrupt-*`, and a warning saying each of `why`.
async fn assert_started_clean(dir: &StateDir, app: &TestApp, logs: &Logs, why: &[&str]) {
    assert_eq!(app.counts("procurement").await, [0, 0, 0]);
    assert_eq!(app.counts("innovation").await, [0, 0, 0]);
    let files = dir.files();
    assert!(
        files.len() == 1 && files[0].starts_with("state.json.corrupt-"),
        "{files:?}"
    );
    assert!(
        logs.warnings()
            .iter()
            .any(|w| why.iter().all(|part| w.contains(part))),
        "{}",
        logs.text()
    );
}

async fn starts_clean_and_sets_aside(content: &[u8], why: &str) {
    let dir = StateDir::new();
    std::fs::write(dir.file(), content).unwrap();
    let clock = new_clock();
    let logs = Logs::capture();
    let app = dir.app(&clock, &[]).await;
    assert_started_clean(&dir, &app, &logs, &["moved aside", why]).await;
    assert_eq!(
        std::fs::read(dir.dir.path().join(&dir.files()[0])).unwrap(),
        content,
        "kept as it was"
    );

    app.beat_ok("3", json!({"module": "pms"})).await;
    app.stop().await;
    let again = dir.app(&clock, &[]).await;
    assert_eq!(again.counts("procurement").await, [1, 1, 1]);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_moved_aside_and_the_service_starts_clean() {
    let snapshot = a_snapshot().await;
    let truncated = &snapshot[..snapshot.len() / 2];
    for content in [
        truncated,
        b"",
        b"{not json",
        b"[1, 2, 3]",
        b"{\"version\": 1}",
    ] {
        starts_clean_and_sets_aside(content, "not a snapshot").await;
    }
}

#[tokio::test]
async fn a_snapshot_of_another_format_version_is_moved_aside() {
    let mut snapshot: Value = serde_json::from_slice(&a_snapshot().await).unwrap();
    assert_eq!(snapshot["version"], 2);
    snapshot["version"] = json!(3);
    starts_clean_and_sets_aside(&serde_json::to_vec(&snapshot).unwrap(), "format version 3").await;
}

#[cfg(unix)]
#[tokio::test]
async fn an_unreadable_snapshot_is_moved_aside() {
    let dir = StateDir::new();
    // A symlink to itself: unreadable for any user (tests may run as root,
    // who can read a file without permissions).
    std::os::unix::fs::symlink(dir.file(), dir.file()).unwrap();
    let logs = Logs::capture();
    let app = dir.app(&new_clock(), &[]).await;
    assert_started_clean(&dir, &app, &logs, &["cannot read it"]).await;
}

#[tokio::test]
async fn modules_no_longer_configured_are_dropped_with_a_warning() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    before.beat_ok("1", json!({"module": "pms"})).await;
    before.beat_ok("2", json!({"module": "ih"})).await;
    before.stop().await;

    let logs = Logs::capture();
    let after = dir
        .app(&clock, &["--modules", "xx:extra,pms:procurement"])
        .await;
    let modules = after.modules().await;
    let keys: Vec<&String> = modules.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["extra", "procurement", "timestamp"]);
    assert_eq!(after.counts("procurement").await, [1, 1, 1]);
    assert_eq!(after.counts("extra").await, [0, 0, 0]);
    assert_eq!(session_users(&everything_visible(&after).await), ["1"]);
    let warnings = logs.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not configured any more") && w.contains("\"ih\"")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_lower_session_cap_keeps_each_users_latest_sessions() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    for tab in ["tab-1", "tab-2", "tab-3", "tab-4"] {
        before
            .beat_ok("1", json!({"module": "pms", "clientId": tab}))
            .await;
        clock.advance(Duration::from_secs(1));
    }
    before.stop().await;

    let logs = Logs::capture();
    let after = dir.app(&clock, &["--max-sessions-per-user", "2"]).await;
    let (_, sessions) = after
        .get("/api/admin/sessions", &after.admin_token("root"))
        .await;
    let tabs: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["clientId"].as_str().unwrap())
        .collect();
    assert_eq!(tabs, ["tab-4", "tab-3"]);
    assert!(
        logs.warnings()
            .iter()
            .any(|w| w.contains("MAX_SESSIONS_PER_USER")),
        "{}",
        logs.text()
    );
}

/// Heartbeats of `n` users straight into the store (faster than HTTP).
async fn fill(app: &TestApp, n: usize) {
    let pms = app.state.modules.by_code("pms").unwrap();
    for i in 0..n {
        app.state
            .store
            .heartbeat(Heartbeat::new(
                UserId::parse(&format!("user-{i}")).unwrap(),
                pms,
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_reader_only_ever_sees_a_whole_snapshot() {
    let dir = StateDir::new();
    let app = dir.app(&new_clock(), &[]).await;
    fill(&app, 5_000).await;
    let snapshots = app.state.snapshots.clone().unwrap();
    snapshots.save().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, file) = (stop.clone(), dir.file());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&file).unwrap();
                let snapshot: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("a partial file ({} bytes): {e}", bytes.len()));
                assert_eq!(snapshot["sessions"].as_array().unwrap().len(), 5_000);
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..30 {
        let saved = snapshots.save().await.unwrap();
        assert_eq!(saved.sessions, 5_000);
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("every read was a whole snapshot");
    assert!(reads > 0);
    assert_eq!(dir.files(), ["state.json"], "no temporary file left");
}

#[tokio::test]
async fn a_failed_save_keeps_the_previous_snapshot_and_the_service() {
    let dir = StateDir::new();
    let clock = new_clock();
    let app = dir.app(&clock, &[]).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    let snapshots = app.state.snapshots.clone().unwrap();
    snapshots.save().await.unwrap();
    let previous = std::fs::read(dir.file()).unwrap();

    // Something in the way of the temporary file.
    let tmp: PathBuf = dir
        .dir
        .path()
        .join(format!("state.json.tmp.{}", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    app.beat_ok("2", json!({"module": "pms"})).await;
    let logs = Logs::capture();
    assert!(snapshots.save().await.is_err());
    assert_eq!(std::fs::read(dir.file()).unwrap(), previous);
    assert!(
        logs.warnings()
            .iter()
            .any(|w| w.contains("snapshot not saved")),
        "{}",
        logs.text()
    );
    assert_eq!(app.counts("procurement").await, [2, 2, 2], "still serving");

    std::fs::remove_dir(&tmp).unwrap();
    app.stop().await;
    let after = dir.app(&clock, &[]).await;
    assert_eq!(after.counts("procurement").await, [2, 2, 2]);
}

#[tokio::test]
async fn the_last_saved_snapshot_is_a_metric() {
    let dir = StateDir::new();
    let clock = new_clock();
    let app = dir.app(&clock, &[]).await;
    assert_eq!(snapshot_metric(&app).await, Some(0.0), "none yet");
    clock.advance(Duration::from_millis(1_500));
    app.state.snapshots.as_ref().unwrap().save().await.unwrap();
    #[allow(clippy::cast_precision_loss)]
    let now = clock.now_ms() as f64 / 1000.0;
    assert_eq!(snapshot_metric(&app).await, Some(now));
}

async fn snapshot_metric(app: &TestApp) -> Option<f64> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("presence_snapshot_last_success_timestamp_seconds "))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_is_saved_every_minute_while_serving() {
    let dir = StateDir::new();
    let args = dir.args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let clock = new_clock();
    let (state, _, _) = build_state_on(&args, clock.clone());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(presence::store::memory::snapshot::run(
        state.snapshots.clone().unwrap(),
        cancel.clone(),
    ));
    let pms = state.modules.by_code("pms").unwrap();
    state
        .store
        .heartbeat(Heartbeat::new(UserId::parse("1").unwrap(), pms))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(!dir.file().exists(), "not before a minute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Ending the task lets a save in progress finish.
    cancel.cancel();
    task.await.unwrap();
    assert!(dir.file().exists(), "saved after a minute");

    // No shutdown save was needed: a crash now would lose nothing.
    let (restarted, _, _) = build_state_on(&args, clock);
    let counts = restarted.store.module_counts().await.unwrap();
    assert_eq!(counts.counts[pms.index()].today, 1);
    assert_eq!(counts.users_anywhere, 1);
}

#[tokio::test]
async fn a_missing_snapshot_is_a_clean_start() {
    let dir = StateDir::new();
    let logs = Logs::capture();
    let app = dir.app(&new_clock(), &[]).await;
    assert_eq!(app.counts("procurement").await, [0, 0, 0]);
    assert!(logs.warnings().is_empty(), "{}", logs.text());
    assert!(logs.text().contains("no snapshot yet"), "{}", logs.text());
    assert!(dir.files().is_empty());
}

/// The files in the directory other than the state file itself.
fn kept_files(dir: &StateDir) -> Vec<PathBuf> {
    dir.files()
        .into_iter()
        .filter(|name| name != "state.json")
        .map(|name| dir.dir.path().join(name))
        .collect()
}

#[tokio::test]
async fn a_restore_that_drops_anything_keeps_the_file_it_came_from() {
    let dir = StateDir::new();
    let clock = new_clock();
    let first = dir.app(&clock, &[]).await;
    for user in ["1", "2", "3"] {
        first.beat_ok(user, json!({"module": "ih"})).await;
    }
    first.stop().await;
    let original = std::fs::read(dir.file()).unwrap();

    // One start with a registry that lacks `ih`: its save would replace
    // the file without it.
    let logs = Logs::capture();
    let narrowed = dir.app(&clock, &["--modules", "pms:procurement"]).await;
    narrowed.stop().await;
    let kept = kept_files(&dir);
    assert_eq!(kept.len(), 1, "{:?}", dir.files());
    assert_eq!(
        std::fs::read(&kept[0]).unwrap(),
        original,
        "the file as it was"
    );
    let where_ = kept[0].to_str().unwrap();
    assert!(
        logs.warnings().iter().any(|w| w.contains(where_)),
        "a warning says where: {}",
        logs.text()
    );
    drop(logs);

    // The kept file brings the module's history back.
    std::fs::copy(&kept[0], dir.file()).unwrap();
    let back = dir.app(&clock, &[]).await;
    assert_eq!(back.counts("innovation").await[2], 3);
    back.stop().await;

    // A snapshot with an entry today's rules refuse is kept too.
    let dir = StateDir::new();
    let mut snapshot: Value = serde_json::from_slice(&original).unwrap();
    snapshot["total"]["ih"]
        .as_array_mut()
        .unwrap()
        .push(json!(""));
    let partly_invalid = serde_json::to_vec(&snapshot).unwrap();
    std::fs::write(dir.file(), &partly_invalid).unwrap();
    let app = dir.app(&clock, &[]).await;
    assert_eq!(app.counts("innovation").await[2], 3);
    let kept = kept_files(&dir);
    assert_eq!(kept.len(), 1, "{:?}", dir.files());
    assert_eq!(std::fs::read(&kept[0]).unwrap(), partly_invalid);
}

/// Numbers in a snapshot are not trusted: history values no minute can
/// hold, and times no clock shows, are dropped (and the file kept), so
/// nothing restored can overflow a sum or a date.
#[tokio::test]
async fn values_out_of_bounds_in_a_snapshot_are_dropped() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    before.beat_ok("1", json!({"module": "pms"})).await;
    before
        .beat_ok("2", json!({"module": "pms", "clientId": "tab"}))
        .await;
    before.stop().await;
    let mut snapshot: Value = serde_json::from_slice(&std::fs::read(dir.file()).unwrap()).unwrap();
    let minute = snapshot["history"][0]["start"].as_i64().unwrap();
    let huge = json!({"sample": u64::MAX, "peak": u64::MAX, "peakAt": minute,
                      "started": u64::MAX, "ended": u64::MAX, "endedMs": u64::MAX});
    let history = snapshot["history"].as_array_mut().unwrap();
    for back in [1, 2] {
        history.insert(
            0,
            json!({"start": minute - back * 60_000, "modules": {"pms": huge}}),
        );
    }
    let sessions = snapshot["sessions"].as_array_mut().unwrap();
    let mut bad_times = sessions[0].clone();
    bad_times["userId"] = json!("3");
    bad_times["startedAt"] = json!(i64::MIN);
    sessions.push(bad_times);
    let mut far_future = sessions[0].clone();
    far_future["userId"] = json!("4");
    far_future["lastSeen"] = json!(i64::MAX);
    far_future["startedAt"] = json!(i64::MAX);
    far_future["resourceSince"] = json!(i64::MAX);
    sessions.push(far_future);
    std::fs::write(dir.file(), serde_json::to_vec(&snapshot).unwrap()).unwrap();

    let after = dir.app(&clock, &[]).await;
    let (status, history) = after
        .get("/api/admin/history?window=1h", &after.admin_token("root"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let pms = &history["modules"]["procurement"];
    assert_eq!(pms["sessionsStarted"], json!(2), "{pms}");
    assert_eq!(pms["peakConcurrent"]["value"], json!(2), "{pms}");
    assert_eq!(pms["averageSessionSeconds"], Value::Null, "{pms}");
    assert!(
        pms["samples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["activeNow"].as_u64().unwrap() <= 2),
        "{pms}"
    );
    assert_eq!(after.counts("procurement").await, [2, 2, 2]);
    assert_eq!(kept_files(&dir).len(), 1, "{:?}", dir.files());
}

/// A state file is read up to a cap (1 GiB, room for a million sessions):
/// a larger one is moved aside unread instead of filling memory.
#[tokio::test]
async fn a_snapshot_over_the_size_cap_is_moved_aside_unread() {
    let dir = StateDir::new();
    let huge = std::fs::File::create(dir.file()).unwrap();
    // Sparse: no disk is used, but a reader without a cap reads it all.
    huge.set_len((1 << 30) + 1).unwrap();
    drop(huge);
    let logs = Logs::capture();
    let app = dir.app(&new_clock(), &[]).await;
    assert_started_clean(&dir, &app, &logs, &["moved aside", "larger than"]).await;
}

#[tokio::test]
async fn a_version_1_snapshot_restores_with_its_sessions_active() {
    let dir = StateDir::new();
    let v1 = json!({
        "version": 1, "savedAt": 1_768_382_990_000_i64, "todayStart": 1_768_348_800_000_i64,
        "sessions": [{"userId": "1", "clientId": "tab-a", "module": "pms", "page": null,
                      "resource": "request:1", "startedAt": 1_768_382_900_000_i64,
                      "resourceSince": 1_768_382_900_000_i64, "lastSeen": 1_768_382_990_000_i64}],
        "today": {"pms": ["1"], "ih": []},
        "total": {"pms": ["1", "2"], "ih": []},
        "history": []
    });
    std::fs::write(dir.file(), serde_json::to_vec(&v1).unwrap()).unwrap();
    let clock = new_clock();
    let app = dir.app(&clock, &[]).await;
    let modules = app.modules().await;
    assert_eq!(
        modules["procurement"],
        json!({"totalUsers": 2, "activeNow": 1, "idleNow": 0, "today": 1})
    );
    let (_, viewers) = app
        .get("/api/presence/resources/request:1", &app.token("a"))
        .await;
    assert_eq!(viewers["viewers"][0]["state"], json!("active"));
    let (_, sessions) = app
        .get("/api/admin/sessions", &app.admin_token("root"))
        .await;
    assert_eq!(sessions["sessions"][0]["state"], json!("active"));
    assert_eq!(
        dir.files(),
        ["state.json"],
        "nothing dropped, nothing kept aside"
    );
    app.stop().await;
    let saved: Value = serde_json::from_slice(&std::fs::read(dir.file()).unwrap()).unwrap();
    assert_eq!(saved["version"], json!(2), "saved in the new version");
    assert_eq!(saved["sessions"][0]["state"], json!("active"));
    assert_eq!(
        saved["users"],
        json!([{"userId": "1", "lastSeen": 1_768_382_990_000_i64, "profile": null, "hidden": false}]),
        "a session's time is its user's lastSeen"
    );
}

#[tokio::test]
async fn a_restart_keeps_states_profiles_hidden_users_and_last_seen() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &[]).await;
    let ann = before.token_with("7", &json!({"name": "Ann"}));
    let hal = before.token_with("9", &json!({"presence_hidden": true}));
    let beat = |token: String, body: Value| {
        let before = &before;
        async move {
            assert_eq!(before.beat(&token, body).await.status(), StatusCode::OK);
        }
    };
    beat(
        ann,
        json!({"module": "pms", "resource": "request:1", "state": "idle"}),
    )
    .await;
    beat(hal, json!({"module": "pms", "resource": "request:1"})).await;
    before.beat_ok("8", json!({"module": "ih"})).await;
    clock.advance(Duration::from_secs(10));
    assert_eq!(before.leave("8", "").await, StatusCode::NO_CONTENT);
    let status_of = |app: &TestApp| {
        let token = app.token("asker");
        let url = app.url("/api/presence/users");
        let client = app.client.clone();
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"userIds": ["7", "8", "9"]}))
                .send()
                .await
                .unwrap();
            let mut body: Value = response.json().await.unwrap();
            body.as_object_mut().unwrap().remove("timestamp");
            body
        }
    };
    let seen = (everything_visible(&before).await, status_of(&before).await);
    assert_eq!(seen.0["viewers"]["count"], json!(1), "{seen:?}");
    assert_eq!(seen.0["modules"]["procurement"]["idleNow"], json!(1));
    before.stop().await;
    let after = dir.app(&clock, &[]).await;
    assert_eq!(
        (everything_visible(&after).await, status_of(&after).await),
        seen
    );
}

/// What user status and the viewers of `request:1` show of user 7's profile.
async fn profile_shown(app: &TestApp) -> (Value, Value) {
    let token = app.token("asker");
    let (_, viewers) = app.get("/api/presence/resources/request:1", &token).await;
    let status: Value = app
        .client
        .post(app.url("/api/presence/users"))
        .bearer_auth(&token)
        .json(&json!({"userIds": ["7"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        viewers["viewers"][0]["profile"].clone(),
        status["users"]["7"]["profile"].clone(),
    )
}

#[tokio::test]
async fn a_claim_dropped_from_profile_claims_is_not_served_after_a_restart() {
    let dir = StateDir::new();
    let clock = new_clock();
    let before = dir.app(&clock, &["--profile-claims", "name,email"]).await;
    let ann = before.token_with("7", &json!({"name": "Ann", "email": "ann@example.com"}));
    let beat = before
        .beat(&ann, json!({"module": "pms", "resource": "request:1"}))
        .await;
    assert_eq!(beat.status(), StatusCode::OK);
    let both = json!({"email": "ann@example.com", "name": "Ann"});
    assert_eq!(profile_shown(&before).await, (both.clone(), both));
    before.stop().await;

    clock.advance(Duration::from_secs(5));
    let name_only = dir.app(&clock, &["--profile-claims", "name"]).await;
    let name = json!({"name": "Ann"});
    assert_eq!(
        profile_shown(&name_only).await,
        (name.clone(), name),
        "the email is no longer a profile claim"
    );
    name_only.stop().await;

    clock.advance(Duration::from_secs(5));
    let none = dir.app(&clock, &["--profile-claims", "none"]).await;
    assert_eq!(profile_shown(&none).await, (Value::Null, Value::Null));
}
