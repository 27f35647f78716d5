-- ARGV[6] user, [7] "all", or "one" with [8] the client field, [9] events
-- bound (0: events off; see events.lua).
-- Returns {sessions that were live, now, 0, ended sessions (code, length ms,
-- expired)...}.
local user, mode, which = ARGV[6], ARGV[7], ARGV[8]
local EVENTS = events_on(ARGV[9])
local sessions, dropped = sessions_of(user)
local touched = dropped and all_codes() or {}
local ended = 0
local gone = {}
for f in pairs(sessions) do
  if mode == 'all' or f == which then gone[#gone + 1] = f end
end
-- With events on: a session already past its TTL ends as expired, at its
-- expiry, a step of its own (oldest first); the live ones leave together.
local view, was_hidden, left = nil, false, false
if EVENTS and #gone > 0 then
  was_hidden = redis.call('SISMEMBER', HIDDEN_KEY, user) == 1
  by_last_seen(gone, sessions)
  view = view_of(sessions, was_hidden)
end
for _, f in ipairs(gone) do
  local s
  view, s = end_session(user, f, sessions, touched, view, was_hidden)
  if s.ls > CUTOFF then
    ended = ended + 1
    left = true
  end
end
if view and left then ev_step(user, view, sessions, was_hidden, NOW, 'left') end
if next(touched) then refresh_presence(user, sessions, touched) end
publish_changes()
if EVENTS then events_flush() end
return { ended, NOW, 0, unpack(ENDED) }
