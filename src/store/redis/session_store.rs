//! The Redis store as a [`SessionStore`]: each operation one script on its
//! user's shard (a heartbeat, a leave) or on every shard at once (the
//! reads, the sweep), the replies read into the store's types.

use std::sync::atomic::Ordering;

use futures_util::future::try_join_all;
use redis::Value;

use super::RedisStore;
use super::decode::{
    Packed, activity, field, int, malformed, ms, next_int, profile, store_error, text,
};
use super::shards::{ShardPage, merge_history};
use crate::clock::Millis;
use crate::domain::{Activity, ClientId, Page, Profile, ResourceId, UserId};
use crate::store::history::History;
use crate::store::{
    CountsAt, Cursor, Heartbeat, HeartbeatAck, Leave, MAX_LISTED_VIEWERS, ModuleCounts,
    ResourceViewers, SessionInfo, SessionPage, SessionStore, StoreError, UserStatus, UsersStatus,
    Viewer,
};

/// How many expired sessions one sweep script removes.
const SWEEP_BATCH: i64 = 1000;

impl SessionStore for RedisStore {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        let shard = self.shard_of(&beat.user);
        let mut inv = self.invocation(&self.scripts.heartbeat, shard);
        let module = &self.config.modules.get(beat.module).code;
        inv.arg(beat.user.as_str())
            .arg(field(beat.client.as_ref()))
            .arg(module)
            .arg(beat.page.as_ref().map_or("", Page::as_str))
            .arg(beat.resource.as_ref().map_or("", ResourceId::as_str))
            .arg(self.config.max_sessions_per_user)
            .arg(if beat.state.is_idle() { "1" } else { "0" })
            .arg(beat.profile.as_ref().map_or("", Profile::as_json))
            .arg(if beat.hidden { "1" } else { "0" })
            .arg(self.config.events_max);
        let (active, at) = self.call_ending(&inv).await?;
        let active = u64::try_from(active).unwrap_or(0);
        self.anywhere[shard].store(active, Ordering::Relaxed);
        // With shards, the others' part is as last seen: exact enough for
        // a client's display, not for metrics.
        let exact = self.shards.len() == 1;
        let active_users = if exact {
            active
        } else {
            self.anywhere
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum()
        };
        Ok(HeartbeatAck {
            active_users,
            exact,
            at,
        })
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        let mut inv = self.invocation(&self.scripts.leave, self.shard_of(user));
        inv.arg(user.as_str());
        match &which {
            Leave::All => inv.arg("all").arg(""),
            Leave::Session(client) => inv.arg("one").arg(field(client.as_ref())),
        };
        inv.arg(self.config.events_max);
        let (ended, _at) = self.call_ending(&inv).await?;
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    async fn module_counts(&self) -> Result<CountsAt, StoreError> {
        let replies: Vec<Vec<u64>> = self.on_every_shard(&self.scripts.counts, &[]).await?;
        let mut total = CountsAt {
            counts: vec![ModuleCounts::default(); self.config.modules.len()],
            users_anywhere: 0,
            at: 0,
        };
        for (shard, flat) in replies.iter().enumerate() {
            let [at, users_anywhere, rest @ ..] = flat.as_slice() else {
                return Err(malformed("short counts"));
            };
            if rest.len() != 4 * total.counts.len() {
                return Err(malformed("counts for another module registry"));
            }
            for (sum, c) in total.counts.iter_mut().zip(rest.chunks_exact(4)) {
                sum.active_now += c[0];
                sum.idle_now += c[1];
                sum.today += c[2];
                sum.total_users += c[3];
            }
            self.anywhere[shard].store(*users_anywhere, Ordering::Relaxed);
            total.users_anywhere += users_anywhere;
            total.at = total.at.max(Millis::try_from(*at).unwrap_or_default());
        }
        Ok(total)
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        // Each shard counts its visible viewers and lists its first
        // MAX_LISTED_VIEWERS; the global first ones are among those.
        let limit = MAX_LISTED_VIEWERS.to_string();
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.viewers, &[resource.as_str(), &limit])
            .await?;
        let mut viewers = Vec::new();
        let mut at = 0;
        let mut count = 0;
        for flat in replies {
            let mut it = flat.into_iter();
            at = next_int(&mut it, "empty viewers")?.max(at);
            count += next_int(&mut it, "no viewer count")?;
            while let (Some(user), Some(since), Some(last), Some(idle), Some(prof)) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            {
                // An id today's rules refuse (stored before they did) is
                // skipped, not a 500 for everyone who looks at the resource.
                let Some(user) = UserId::parse(&text(user)?) else {
                    continue;
                };
                viewers.push(Viewer {
                    user,
                    since: int(&since)?,
                    last_seen: int(&last)?,
                    state: activity(int(&idle)? == 1),
                    profile: profile(prof, &self.config.profile_claims.0)?,
                });
            }
        }
        Ok(ResourceViewers::ordered(
            viewers,
            u64::try_from(count).unwrap_or(0),
            at,
        ))
    }

    async fn user_status(&self, users: &[UserId]) -> Result<UsersStatus, StoreError> {
        // One script per shard holding any of them, the shards at once.
        let mut by_shard: Vec<Vec<&UserId>> = vec![Vec::new(); self.shards.len()];
        for user in users {
            by_shard[self.shard_of(user)].push(user);
        }
        let replies = try_join_all(
            by_shard
                .iter()
                .enumerate()
                .filter(|(_, u)| !u.is_empty())
                .map(|(shard, users)| async move {
                    let mut inv = self.invocation(&self.scripts.users, shard);
                    for user in users {
                        inv.arg(user.as_str());
                    }
                    self.call::<Vec<Value>>(&inv)
                        .await
                        .map(|flat| (users, flat))
                }),
        )
        .await?;
        let mut at = 0;
        let mut found = std::collections::HashMap::with_capacity(users.len());
        for (shard_users, flat) in replies {
            let mut it = flat.into_iter();
            at = next_int(&mut it, "empty user status")?.max(at);
            for user in shard_users {
                let (Some(state), Some(modules), Some(seen), Some(prof)) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(malformed("short user status"));
                };
                let status = UserStatus {
                    state: Activity::parse(&text(state)?),
                    modules: {
                        let mut ids: Vec<_> = text(modules)?
                            .split(',')
                            .filter_map(|code| self.config.modules.by_code(code))
                            .collect();
                        ids.sort_unstable();
                        ids
                    },
                    last_seen: text(seen)?.parse().ok(),
                    profile: profile(prof, &self.config.profile_claims.0)?,
                };
                found.insert(*user, status);
            }
        }
        if at == 0 {
            at = self.clock.now_ms(); // nobody asked for: no shard asked
        }
        let out = users
            .iter()
            .map(|user| (user.clone(), found.get(user).cloned().unwrap_or_default()))
            .collect();
        Ok(UsersStatus { users: out, at })
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        let (score, member) = match &cursor {
            Some(c) => (
                c.last_seen.to_string(),
                format!("{}\u{1f}{}", field(c.client.as_ref()), c.user),
            ),
            None => (String::new(), String::new()),
        };
        let limit_arg = limit.to_string();
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.sessions, &[&limit_arg, &score, &member])
            .await?;
        let page = ShardPage::merge(replies, limit)?;
        let mut sessions = Vec::new();
        let mut last_row = None;
        for (member, score, raw) in page.rows {
            let (client, user) = member
                .split_once('\u{1f}')
                .ok_or_else(|| malformed("session member"))?;
            // What cannot be listed is skipped, never a 500 for the whole
            // list: an id today's rules refuse (stored before they did), a
            // session the script found undecodable (and removed), one of a
            // module no longer in the registry.
            let Some(user) = UserId::parse(user) else {
                continue;
            };
            let client = ClientId::parse(client);
            last_row = Some(Cursor {
                last_seen: score,
                user: user.clone(),
                client: client.clone(),
            });
            if raw.is_empty() {
                continue; // its hash expired before the sweeper took it: skip
            }
            let Ok(packed) = serde_json::from_str::<Packed>(&raw) else {
                continue;
            };
            let Some(module) = self.config.modules.by_code(&packed.m) else {
                continue;
            };
            sessions.push(SessionInfo {
                user,
                client,
                module,
                page: Page::parse(&packed.p),
                resource: ResourceId::parse(&packed.r),
                state: activity(packed.i == Some(1.0)),
                started_at: ms(packed.st),
                last_seen: ms(packed.ls),
            });
        }
        // The cursor is the last row read, listed or not.
        let next = if page.more { last_row } else { None };
        Ok(SessionPage {
            sessions,
            next,
            at: page.at,
        })
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        // Periodically, then: the shard count recorded in Redis is read
        // again, and recorded again if Redis lost it.
        self.verify_layout().await?;
        let batch = SWEEP_BATCH.to_string();
        let events_max = self.config.events_max.to_string();
        let mut total = 0;
        loop {
            let replies: Vec<Vec<Value>> = self
                .on_every_shard(&self.scripts.sweep, &[&batch, &events_max])
                .await?;
            let mut full = false;
            for flat in replies {
                let (removed, _at, _) = self.ending(flat)?;
                total += usize::try_from(removed).unwrap_or(0);
                full |= removed >= SWEEP_BATCH;
            }
            if !full {
                return Ok(total);
            }
        }
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        let replies: Vec<Vec<u64>> = self
            .on_every_shard(&self.scripts.live_sessions, &[])
            .await?;
        let mut total = vec![0; self.config.modules.len()];
        for counts in replies {
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        Ok(total)
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let mut inv = self.invocation(&self.scripts.sample, 0);
        if self.shards.len() > 1 {
            let counts = self.module_counts().await?;
            let given = counts
                .counts
                .iter()
                .map(|c| c.active_now.to_string())
                .collect::<Vec<_>>()
                .join(",");
            inv.arg(given);
        }
        let _: Vec<Value> = self.call(&inv).await?;
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.history, &[&minutes.to_string()])
            .await?;
        merge_history(replies, &self.config.modules)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Not ready while Redis records another shard count.
        self.layout_refusal()?;
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }
}
