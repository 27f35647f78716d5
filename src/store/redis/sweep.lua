-- ARGV[6] batch size, [7] events bound (0: events off; see events.lua).
-- Removes up to a batch of expired sessions and prunes the presence sets.
-- Returns {removed, now, 0, ended sessions (code, length ms, expired)...}.
local batch = tonumber(ARGV[6])
local EVENTS = events_on(ARGV[7])
-- With events on, per user met: their sessions, whether hidden, and their
-- view, read before the first of their removals.
local held = {}
local expired = redis.call('ZRANGE', TIME_KEY, '-inf', CUTOFF, 'BYSCORE', 'LIMIT', 0, batch)
for _, m in ipairs(expired) do
  local field, user = parse_member(m)
  local raw = redis.call('HGET', sess_key(user), field)
  local s = raw and decode_session(raw)
  if s then
    local h = nil
    if EVENTS then
      h = held[user]
      if not h then
        local sessions = held_sessions(user)
        local hidden = redis.call('SISMEMBER', HIDDEN_KEY, user) == 1
        h = { sessions = sessions, hidden = hidden, view = view_of(sessions, hidden) }
        held[user] = h
      end
    end
    remove_session(user, field, s)
    if h then
      h.sessions[field] = nil
      h.view = ev_step(user, h.view, h.sessions, h.hidden, s.ls + TTL, 'expired')
    end
  elseif raw then
    drop_broken(user, field)
    repair_presence(user)
  else
    redis.call('ZREM', TIME_KEY, m)
  end
end
for _, code in ipairs(CODES) do
  redis.call('ZREMRANGEBYSCORE', pres_key(code), '-inf', CUTOFF)
  redis.call('ZREMRANGEBYSCORE', awake_key(code), '-inf', CUTOFF)
  redis.call('ZREMRANGEBYSCORE', msess_key(code), '-inf', CUTOFF)
end
redis.call('ZREMRANGEBYSCORE', ANY_KEY, '-inf', CUTOFF)
-- Profiles a day past their user's last session: forgotten, a batch at a
-- time (profiles written before `proftime` existed are not served past
-- PROFILE_CUTOFF either, and join it at the user's next heartbeat).
local stale = redis.call('ZRANGE', PROFILE_TIME_KEY, '-inf', PROFILE_CUTOFF, 'BYSCORE', 'LIMIT', 0, batch)
for _, user in ipairs(stale) do
  redis.call('HDEL', PROFILE_KEY, user)
  redis.call('ZREM', PROFILE_TIME_KEY, user)
end
publish_changes()
if EVENTS then events_flush() end
return { #expired, NOW, 0, unpack(ENDED) }
