-- Shared by every script of the Redis store. Every key lives under one hash
-- tag, P = "{prefix}", so the scripts also run on Redis Cluster; KEYS[1] is
-- P..":time", declared so a cluster client routes the call to that slot.
--
-- ARGV[1] P            key prefix with its hash tag
-- ARGV[2] ttl          SESSION_TTL in ms
-- ARGV[3] now          ms, or "" to use Redis's own clock (production)
-- ARGV[4] days         "start:key,start:key,start:key": yesterday, today and
--                      tomorrow in STATS_TIMEZONE as the instance sees them
-- ARGV[5] codes        module codes, comma-separated, registry order
-- ARGV[6..]            the script's own arguments
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local NOW = tonumber(ARGV[3])
if not NOW then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local CUTOFF = NOW - TTL
-- A user last seen at or before this has no profile any more: one day
-- (PROFILE_KEEP) after their last session expired; Ttl::profile_cutoff in
-- src/store/ttl.rs says the same. Change them together.
local PROFILE_CUTOFF = CUTOFF - 24 * 3600 * 1000
-- Every score these scripts write is a NOW, so a live one lies in
-- (CUTOFF, NOW]; SKEW allows for Redis's clock stepping back a little.
-- Anything later (+inf, year 10000: a hand edit) is never counted.
local SKEW = 60000
local LATEST = NOW + SKEW
local SEP = '\31'
local DAY_KEEP_S = 2 * 24 * 3600

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

local CODES = split(ARGV[5], ',')

-- The local day that NOW falls in: the last boundary at or before NOW. An
-- instance whose clock runs over a day ahead of Redis sends only later
-- boundaries; its earliest day is then the closest there is.
local DAY_START, DAY = nil, nil
for _, b in ipairs(split(ARGV[4], ',')) do
  local start, key = string.match(b, '^(-?%d+):(.+)$')
  if tonumber(start) <= NOW or not DAY then DAY_START, DAY = tonumber(start), key end
end

local function today_key(code) return P .. ':today:' .. code .. ':' .. DAY end
local function total_key(code) return P .. ':total:' .. code end
local function pres_key(code) return P .. ':pres:' .. code end
local function awake_key(code) return P .. ':awake:' .. code end
local function sess_key(user) return P .. ':sess:' .. user end
local function msess_key(code) return P .. ':msess:' .. code end
local function res_key(resource) return P .. ':res:' .. resource end
-- Resources whose viewers this script changed (a join, a leave, a state or
-- profile change), published on P..':presence' when it ends, so that every
-- instance's presence streams re-read them.
local CHANGED = {}
local function changed(resource)
  if resource and resource ~= '' then CHANGED[resource] = true end
end
local function publish_changes()
  for r in pairs(CHANGED) do redis.call('PUBLISH', P .. ':presence', r) end
end
local TIME_KEY = P .. ':time'
local ANY_KEY = P .. ':any'
-- Per user, not per session: latest heartbeat (sorted set), profile JSON
-- (hash) with when it was last written (sorted set, for the sweeper), and
-- whether the latest token hid them (set).
local SEEN_KEY = P .. ':seen'
local PROFILE_KEY = P .. ':prof'
local PROFILE_TIME_KEY = P .. ':proftime'
local HIDDEN_KEY = P .. ':hidden'

-- Whether string a sorts before b byte by byte (Lua's `<` on strings
-- follows the server's locale).
local function bytes_below(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function sadd_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('SADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
end

-- Set by roll_day when this shard held no day yet: new, or its data lost
-- (FLUSHALL, a restart without persistence). The instance then checks the
-- recorded shard count again (see shards.rs), at no cost to other calls.
local FRESH = false

-- At the first call of a new local day, today becomes the users live at its
-- midnight (they are here today, and activeNow <= today must hold). Days
-- only move forward. A day that is not a date (a hand edit) is replaced.
local function roll_day()
  if not DAY then return end
  local current = redis.call('GET', P .. ':day')
  if not current then FRESH = true end
  if current and not string.match(current, '^%d%d%d%d%-%d%d%-%d%d$') then current = nil end
  if current and current >= DAY then return end
  redis.call('SET', P .. ':day', DAY)
  for _, code in ipairs(CODES) do
    local live = redis.call('ZRANGE', pres_key(code), '(' .. (DAY_START - TTL), '+inf', 'BYSCORE')
    if #live > 0 then
      sadd_all(today_key(code), live)
      redis.call('EXPIRE', today_key(code), DAY_KEEP_S)
    end
  end
end

local function member(field, user) return field .. SEP .. user end

local function parse_member(m)
  local i = string.find(m, SEP, 1, true)
  return string.sub(m, 1, i - 1), string.sub(m, i + 1)
end

-- Every module code as a set, for "touch them all".
local function all_codes()
  local out = {}
  for _, code in ipairs(CODES) do out[code] = true end
  return out
end

local function is_ms(x) return type(x) == 'number' and x == x and math.abs(x) < 1e15 end

-- A stored session as a table, or nil when the value is not one (not JSON,
-- or not the shape these scripts write: a bad write, a bug, a hand edit).
-- Such a value must cost its user's session, never fail the script for
-- everyone: callers skip it and remove it with drop_broken.
local function decode_session(raw)
  local ok, s = pcall(cjson.decode, raw)
  if not ok or type(s) ~= 'table' then return nil end
  if type(s.m) ~= 'string' or type(s.p) ~= 'string' or type(s.r) ~= 'string'
    or not is_ms(s.st) or not is_ms(s.rs) or not is_ms(s.ls) then
    return nil
  end
  return s
end

-- Removes a session whose value cannot be decoded, and what indexes it
-- without naming its module (the resource sets check the hash on read).
local function drop_broken(user, field)
  local m = member(field, user)
  redis.call('HDEL', sess_key(user), field)
  redis.call('ZREM', TIME_KEY, m)
  for _, code in ipairs(CODES) do redis.call('ZREM', msess_key(code), m) end
end

-- A user's sessions: field ("" for the default session) -> table
-- {m = code, st = startedAt, rs = resourceSince, ls = lastSeen, p = page, r = resource,
--  i = 1 when idle (absent when active, as in values written before states)}
-- and whether any had to be dropped as undecodable.
local function sessions_of(user)
  local flat = redis.call('HGETALL', sess_key(user))
  local out = {}
  local dropped = false
  for i = 1, #flat, 2 do
    local s = decode_session(flat[i + 1])
    if s then
      out[flat[i]] = s
    else
      drop_broken(user, flat[i])
      dropped = true
    end
  end
  return out, dropped
end

-- History: one hash per minute, {p}:hist:<minute start ms>, with fields
-- <code>:s sample, :p peak, :pa peak at, :st started, :e ended, :ems ended ms.
local HIST_KEEP_S = 25 * 3600
local function hist_key(t) return P .. ':hist:' .. string.format('%d', t - (t % 60000)) end

-- A count that is not an integer (a hand edit) starts again from `by`; a
-- key that is not a hash fails the call (WRONGTYPE, an outage: 503).
local function hist_incr(t, field, by)
  local key = hist_key(t)
  local r = redis.pcall('HINCRBY', key, field, by)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then redis.call('HINCRBY', key, field, by) end
    redis.call('HSET', key, field, by)
  end
  redis.call('EXPIRE', key, HIST_KEEP_S)
end

local function record_start(code) hist_incr(NOW, code .. ':st', 1) end

-- Ended sessions, returned to the caller for its metrics: code, length
-- in ms, 1 if expired else 0.
local ENDED = {}

local function record_end(code, at, length, expired)
  hist_incr(at, code .. ':e', 1)
  hist_incr(at, code .. ':ems', math.max(0, length))
  ENDED[#ENDED + 1] = code
  ENDED[#ENDED + 1] = math.max(0, length)
  ENDED[#ENDED + 1] = expired and 1 or 0
end

-- Raises this minute's peak of a module to n if higher.
local function see_peak(code, n)
  local key = hist_key(NOW)
  local peak = tonumber(redis.call('HGET', key, code .. ':p') or '0') or 0
  if n > peak then
    redis.call('HSET', key, code .. ':p', n, code .. ':pa', string.format('%d', NOW))
    redis.call('EXPIRE', key, HIST_KEEP_S)
  end
end

-- Removes a session and records its end: expired at lastSeen + TTL if it
-- was past its TTL, else left now.
local function remove_session(user, field, s)
  redis.call('HDEL', sess_key(user), field)
  redis.call('ZREM', TIME_KEY, member(field, user))
  redis.call('ZREM', msess_key(s.m), member(field, user))
  if s.r ~= '' then redis.call('SREM', res_key(s.r), member(field, user)) end
  changed(s.r)
  if s.ls <= CUTOFF then
    record_end(s.m, s.ls + TTL, s.ls - s.st, true)
  else
    record_end(s.m, NOW, NOW - s.st, false)
  end
end

-- Recomputes the user's latest live heartbeat in each touched module and
-- anywhere, and of an active session in each touched module (idleNow is
-- the users present there and not awake), from their remaining sessions.
local function refresh_presence(user, sessions, touched)
  local any = nil
  local latest, awake = {}, {}
  for _, s in pairs(sessions) do
    if s.ls > CUTOFF then
      if not any or s.ls > any then any = s.ls end
      if not latest[s.m] or s.ls > latest[s.m] then latest[s.m] = s.ls end
      if s.i ~= 1 and (not awake[s.m] or s.ls > awake[s.m]) then awake[s.m] = s.ls end
    end
  end
  for code in pairs(touched) do
    if latest[code] then
      redis.call('ZADD', pres_key(code), latest[code], user)
    else
      redis.call('ZREM', pres_key(code), user)
    end
    if awake[code] then
      redis.call('ZADD', awake_key(code), awake[code], user)
    else
      redis.call('ZREM', awake_key(code), user)
    end
  end
  if any then redis.call('ZADD', ANY_KEY, any, user) else redis.call('ZREM', ANY_KEY, user) end
end

-- After drop_broken: the user's presence recomputed from what is left.
local function repair_presence(user)
  refresh_presence(user, (sessions_of(user)), all_codes())
end

local function live_count(key)
  return redis.call('ZCOUNT', key, '(' .. CUTOFF, LATEST)
end
