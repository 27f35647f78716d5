-- ARGV[6] user, [7] client field ("" = default session), [8] module code,
-- [9] page ("" = none), [10] resource ("" = none), [11] sessions per user cap,
-- [12] "1" idle / "0" active, [13] profile JSON ("" = none), [14] "1" hidden,
-- [15] events bound (0: events off; see events.lua)
-- Returns {activeUsers, now, 1 if the shard held no day yet (see roll_day),
-- ended sessions (code, length ms, expired)...}.
local user, field, code, page, resource = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local cap = tonumber(ARGV[11])
local idle = ARGV[12] == '1' and 1 or nil
local profile, hidden = ARGV[13], ARGV[14] == '1'
local EVENTS = events_on(ARGV[15])
roll_day()

local sessions, dropped = sessions_of(user)
local touched = { [code] = true }
-- A session value that was undecodable, or a hash gone while the user is
-- still counted somewhere (deleted, or evicted under a volatile-* policy):
-- the module it was in is unknown, so every module's presence is
-- recomputed, and this session leaves the other modules' session sets.
if dropped or (next(sessions) == nil and redis.call('ZSCORE', ANY_KEY, user)) then
  touched = all_codes()
  for other in pairs(touched) do
    if other ~= code then redis.call('ZREM', msess_key(other), member(field, user)) end
  end
end
local was_hidden = redis.call('SISMEMBER', HIDDEN_KEY, user) == 1
-- With events on, the user's view before the next step; nil until a step
-- changes something (a beat that changes nothing computes no view).
local view = nil
-- Dead sessions go first: they neither count toward the cap nor revive.
-- Each one's end is a step of its own, at its expiry.
local live, dead = 0, {}
for f, s in pairs(sessions) do
  if s.ls <= CUTOFF then dead[#dead + 1] = f else live = live + 1 end
end
if EVENTS and #dead > 0 then
  by_last_seen(dead, sessions)
  view = view_of(sessions, was_hidden)
end
for _, f in ipairs(dead) do
  view = end_session(user, f, sessions, touched, view, was_hidden)
end

local s = sessions[field]
-- The beat's own step (a new session, a move, a state change) is an event
-- only when it changes the view.
local own_step = EVENTS and (view or not s or s.m ~= code or s.r ~= resource or s.i ~= idle)
if own_step and not view then view = view_of(sessions, was_hidden) end
if not s then
  if live >= cap then
    local oldest, oldest_field = nil, nil
    for f, o in pairs(sessions) do
      if not oldest or o.ls < oldest.ls then oldest, oldest_field = o, f end
    end
    remove_session(user, oldest_field, oldest)
    touched[oldest.m] = true
    sessions[oldest_field] = nil
    if view then view = ev_step(user, view, sessions, was_hidden, NOW, 'left') end
  end
  s = { m = code, st = NOW, rs = NOW, ls = NOW, p = page, r = resource, i = idle }
  record_start(code)
  if resource ~= '' then redis.call('SADD', res_key(resource), member(field, user)) end
  changed(resource)
else
  if s.m ~= code then
    touched[s.m] = true
    record_end(s.m, NOW, NOW - s.st, false)
    redis.call('ZREM', msess_key(s.m), member(field, user))
    record_start(code)
    s.m = code
    s.st = NOW
  end
  if s.r ~= resource then
    if s.r ~= '' then redis.call('SREM', res_key(s.r), member(field, user)) end
    if resource ~= '' then redis.call('SADD', res_key(resource), member(field, user)) end
    changed(s.r)
    changed(resource)
    s.r = resource
    s.rs = NOW
  end
  if s.i ~= idle then changed(s.r) end
  s.p = page
  s.ls = NOW
  s.i = idle
end
sessions[field] = s
if own_step then ev_step(user, view, sessions, hidden, NOW, 'moved') end

redis.call('HSET', sess_key(user), field, cjson.encode(s))
-- The sweeper removes expired sessions (and records their end); the
-- expiry is only a backstop for when no instance sweeps for an hour.
redis.call('PEXPIRE', sess_key(user), TTL + 3600000)
if resource ~= '' then redis.call('PEXPIRE', res_key(resource), 2 * TTL) end
redis.call('ZADD', TIME_KEY, NOW, member(field, user))
redis.call('ZADD', msess_key(code), NOW, member(field, user))
refresh_presence(user, sessions, touched)
redis.call('SADD', today_key(code), user)
redis.call('EXPIRE', today_key(code), DAY_KEEP_S)
redis.call('SADD', total_key(code), user)
-- Per user: when, the latest token's profile, and whether it hides them.
redis.call('ZADD', SEEN_KEY, NOW, user)
-- A new profile, or hiding, changes how the user shows wherever they are.
local old_profile = redis.call('HGET', PROFILE_KEY, user) or ''
if old_profile ~= profile or was_hidden ~= hidden then
  for _, o in pairs(sessions) do changed(o.r) end
end
if profile ~= '' then
  redis.call('HSET', PROFILE_KEY, user, profile)
  redis.call('ZADD', PROFILE_TIME_KEY, NOW, user)
else
  redis.call('HDEL', PROFILE_KEY, user)
  redis.call('ZREM', PROFILE_TIME_KEY, user)
end
if hidden then
  redis.call('SADD', HIDDEN_KEY, user)
else
  redis.call('SREM', HIDDEN_KEY, user)
end
see_peak(code, live_count(pres_key(code)))
publish_changes()
if EVENTS then events_flush() end
return { live_count(ANY_KEY), NOW, FRESH and 1 or 0, unpack(ENDED) }
