-- Presence events (contract section 9), written by the script that makes
-- the change, so there is no change without its event and no event without
-- its change. Mirrors `diff` of src/events/mod.rs exactly: the view of a
-- user counts every session the store holds, expired or not; per user,
-- never per tab; leaves before enters. Included after the prelude by the
-- scripts that remove or change sessions (heartbeat, leave, sweep).
--
-- Events are on when the script's bound argument is above 0 (events_on);
-- with them off the scripts call none of this and do no extra work.
-- Each event is one entry of the shard's stream P..':events' whose field
-- `e` is the JSON of the Rust `Event`; past EV_MAX entries the oldest are
-- trimmed and counted in P..':events:dropped'.
local EV_MAX = 0
local EV_OUT = {}

-- Whether events are on, given the script's bound argument.
local function events_on(bound)
  EV_MAX = tonumber(bound) or 0
  return EV_MAX > 0
end

-- A user's view (UserView) from their sessions, field -> session: the
-- modules and resources they hold a session in (a resource with the
-- bytewise-first module among its sessions), whether any session is
-- active, whether they are hidden.
local function view_of(sessions, hidden)
  local v = { online = false, modules = {}, resources = {}, active = false, hidden = hidden }
  for _, s in pairs(sessions) do
    v.online = true
    v.modules[s.m] = true
    if s.r ~= '' then
      local m = v.resources[s.r]
      if not m or bytes_below(s.m, m) then v.resources[s.r] = s.m end
    end
    if s.i ~= 1 then v.active = true end
  end
  return v
end

-- The keys of a table in bytewise order (as a Rust BTreeSet iterates).
local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, bytes_below)
  return out
end

-- Whether a user other than `user` holds a session on `resource`: its set
-- has a member whose user part differs. Stops at the first one found.
local function others_on(resource, user)
  local cursor = '0'
  repeat
    local page = redis.call('SSCAN', res_key(resource), cursor, 'COUNT', 100)
    cursor = page[1]
    for _, m in ipairs(page[2]) do
      local i = string.find(m, SEP, 1, true)
      if i and string.sub(m, i + 1) ~= user then return true end
    end
  until cursor == '0'
  return false
end

-- One event as the JSON of the Rust `Event` (serde's field order,
-- optional fields omitted when absent, `at` an integer).
local function event_json(kind, at, user, f)
  local out = { '{"kind":"', kind, '","at":', string.format('%d', at), ',"user":', cjson.encode(user) }
  if f.module then out[#out + 1] = ',"module":' .. cjson.encode(f.module) end
  if f.resource then out[#out + 1] = ',"resource":' .. cjson.encode(f.resource) end
  if f.reason then out[#out + 1] = ',"reason":"' .. f.reason .. '"' end
  if f.state then out[#out + 1] = ',"state":"' .. f.state .. '"' end
  if f.hidden then out[#out + 1] = ',"hidden":true' end
  out[#out + 1] = '}'
  return table.concat(out)
end

-- The events of one change to `user`'s sessions from view `before` to
-- `after`, at `at`, leaves with `reason` (events::diff). Occupancy is read
-- from the resource sets as they are after the change.
local function emit_diff(user, before, after, at, reason)
  local hidden = after.hidden or (not after.online and before.hidden)
  local function push(kind, f)
    f.hidden = hidden
    EV_OUT[#EV_OUT + 1] = event_json(kind, at, user, f)
  end
  for _, r in ipairs(sorted_keys(before.resources)) do
    if not after.resources[r] then
      push('resource.leave', { module = before.resources[r], resource = r, reason = reason })
      if not others_on(r, user) then push('resource.vacated', { resource = r }) end
    end
  end
  for _, m in ipairs(sorted_keys(before.modules)) do
    if not after.modules[m] then push('module.leave', { module = m, reason = reason }) end
  end
  if before.online and not after.online then
    push('user.offline', { reason = reason })
    return
  end
  local entered = sorted_keys(after.modules)
  if not before.online and after.online then push('user.online', { module = entered[1] }) end
  for _, m in ipairs(entered) do
    if not before.modules[m] then push('module.enter', { module = m }) end
  end
  for _, r in ipairs(sorted_keys(after.resources)) do
    if not before.resources[r] then
      push('resource.join', { module = after.resources[r], resource = r })
      if not others_on(r, user) then push('resource.occupied', { resource = r }) end
    end
  end
  if before.online and before.active ~= after.active then
    push('user.state', { state = after.active and 'active' or 'idle' })
  end
end

-- One step: the events from `before` to the view of `sessions` now;
-- returns that view, the next step's before.
local function ev_step(user, before, sessions, hidden, at, reason)
  local after = view_of(sessions, hidden)
  emit_diff(user, before, after, at, reason)
  return after
end

-- Removes `user`'s session `f` (and it from `sessions`, its module
-- touched); with events on (a `view`), one past its TTL ends as a step of
-- its own, at its expiry. Returns the view after, and the session.
local function end_session(user, f, sessions, touched, view, hidden)
  local s = sessions[f]
  remove_session(user, f, s)
  touched[s.m] = true
  sessions[f] = nil
  if view and s.ls <= CUTOFF then
    view = ev_step(user, view, sessions, hidden, s.ls + TTL, 'expired')
  end
  return view, s
end

-- Field names of `sessions` listed in `fields`, oldest heartbeat first
-- (ties bytewise by field): the order their expiries happened in.
local function by_last_seen(fields, sessions)
  table.sort(fields, function(a, b)
    local x, y = sessions[a].ls, sessions[b].ls
    if x ~= y then return x < y end
    return bytes_below(a, b)
  end)
end

-- A user's sessions as the store holds them, without the side effects of
-- sessions_of (an undecodable one is skipped here, and left to the script's
-- own handling: dropped broken sessions make no events).
local function held_sessions(user)
  local flat = redis.call('HGETALL', sess_key(user))
  local out = {}
  for i = 1, #flat, 2 do
    local s = decode_session(flat[i + 1])
    if s then out[flat[i]] = s end
  end
  return out
end

-- Appends the events of this script to the stream, then keeps it to
-- EV_MAX entries, counting those trimmed.
local function events_flush()
  if #EV_OUT == 0 then return end
  local stream = P .. ':events'
  for _, e in ipairs(EV_OUT) do redis.call('XADD', stream, '*', 'e', e) end
  if redis.call('XLEN', stream) > EV_MAX then
    local trimmed = redis.call('XTRIM', stream, 'MAXLEN', EV_MAX)
    if trimmed > 0 then redis.call('INCRBY', P .. ':events:dropped', trimmed) end
  end
end
