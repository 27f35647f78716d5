//! The Lua scripts and how they are called: each loaded with the shared
//! `prelude.lua` (those that change sessions with `events.lua` too),
//! invoked on one shard with the prelude's arguments (the shard's keys, the
//! TTL, "now", the local day window, the module codes), and the replies
//! that report ended sessions passed on to the observer.

use std::sync::Arc;

use redis::{FromRedisValue, Script, ScriptInvocation, Value};

use super::decode::{int, malformed, store_error, text};
use super::{RedisStore, TimeSource};
use crate::clock::day::{day_bounds, local_date};
use crate::clock::{Millis, duration_ms};
use crate::store::StoreError;

/// A script of `src/store/redis/`, after the prelude every script shares
/// (and `events.lua` for those that change sessions).
macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("prelude.lua"),
            "\n",
            include_str!($file)
        ))
    };
    // A script that writes presence events: events.lua between the two.
    ($file:literal, events) => {
        Script::new(concat!(
            include_str!("prelude.lua"),
            "\n",
            include_str!("events.lua"),
            "\n",
            include_str!($file)
        ))
    };
}

/// One script per operation, hashed once and called by SHA.
pub(super) struct Scripts {
    pub(super) heartbeat: Script,
    pub(super) leave: Script,
    pub(super) counts: Script,
    pub(super) viewers: Script,
    pub(super) sessions: Script,
    pub(super) sweep: Script,
    pub(super) sample: Script,
    pub(super) history: Script,
    pub(super) live_sessions: Script,
    pub(super) users: Script,
    /// Without the prelude: it runs on the base tag, not on a shard.
    pub(super) layout: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            heartbeat: script!("heartbeat.lua", events),
            leave: script!("leave.lua", events),
            counts: script!("counts.lua"),
            viewers: script!("viewers.lua"),
            sessions: script!("sessions.lua"),
            sweep: script!("sweep.lua", events),
            sample: script!("sample.lua"),
            history: script!("history.lua"),
            live_sessions: script!("live_sessions.lua"),
            users: script!("users.lua"),
            layout: Script::new(include_str!("layout.lua")),
        }
    }
}

/// The day window sent to the scripts, valid for one local day.
#[derive(Debug, Default)]
pub(super) struct DayWindow {
    from: Millis,
    until: Millis,
    text: Arc<str>,
}

impl RedisStore {
    /// Calls a script whose reply is three integers (a count, "now", and 1
    /// when the shard held no day yet) followed by the sessions it ended
    /// (code, length ms, expired), tells the observer of those, and returns
    /// the count and "now". A shard without a day may have lost its data,
    /// the recorded shard count with it: that is checked again, and
    /// recorded again when missing, before the answer counts.
    pub(super) async fn call_ending(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<(i64, Millis), StoreError> {
        let flat: Vec<Value> = self.call(inv).await?;
        let (first, at, fresh) = self.ending(flat)?;
        if fresh {
            self.verify_layout().await?;
        }
        Ok((first, at))
    }

    /// Reads a reply of two integers followed by ended sessions; see
    /// [`call_ending`](Self::call_ending).
    pub(super) fn ending(&self, flat: Vec<Value>) -> Result<(i64, Millis, bool), StoreError> {
        let mut it = flat.into_iter();
        let (Some(first), Some(at), Some(fresh)) = (it.next(), it.next(), it.next()) else {
            return Err(malformed("short reply"));
        };
        while let (Some(code), Some(length), Some(expired)) = (it.next(), it.next(), it.next()) {
            #[allow(
                clippy::cast_precision_loss,
                reason = "session lengths are far below 2^52 ms"
            )]
            let seconds = int(&length)? as f64 / 1000.0;
            self.observer
                .sessions_ended(&text(code)?, int(&expired)? == 1, &[seconds]);
        }
        Ok((int(&first)?, int(&at)?, int(&fresh)? == 1))
    }

    /// Yesterday's, today's and tomorrow's local start as the instance's
    /// clock sees them, as `start:date,...`. Computed once a day, not on
    /// every call: every heartbeat sends it.
    fn day_window(&self) -> Arc<str> {
        let now = self.clock.now_ms();
        let mut cached = self
            .day_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !(cached.from..cached.until).contains(&now) {
            let tz = self.config.timezone;
            let (today, tomorrow) = day_bounds(tz, now);
            let (yesterday, _) = day_bounds(tz, today - 1);
            let text = [yesterday, today, tomorrow]
                .iter()
                .map(|start| format!("{start}:{}", local_date(tz, *start)))
                .collect::<Vec<_>>()
                .join(",");
            *cached = DayWindow {
                from: today,
                until: tomorrow,
                text: text.into(),
            };
        }
        Arc::clone(&cached.text)
    }

    /// Prepares `script` on `shard` with the prelude's arguments.
    pub(super) fn invocation<'a>(&self, script: &'a Script, shard: usize) -> ScriptInvocation<'a> {
        let now = match &self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Clock(clock) => clock.now_ms().to_string(),
        };
        let shard = &self.shards[shard];
        let mut inv = script.key(&shard.time_key);
        inv.arg(&shard.tag)
            .arg(duration_ms(self.config.session_ttl))
            .arg(now)
            .arg(&*self.day_window())
            .arg(&self.codes);
        inv
    }

    pub(super) async fn call<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.check_layout().await?;
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(store_error)
    }
}
