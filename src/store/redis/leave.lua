-- ARGV[6] user, [7] "all", or "one" with [8] the client field.
-- Returns {sessions that were live, now, ended sessions (code, length ms,
-- expired)...}.
local user, mode, which = ARGV[6], ARGV[7], ARGV[8]
local sessions, dropped = sessions_of(user)
local touched = dropped and all_codes() or {}
local ended = 0
for f, s in pairs(sessions) do
  if mode == 'all' or f == which then
    remove_session(user, f, s)
    touched[s.m] = true
    if s.ls > CUTOFF then ended = ended + 1 end
    sessions[f] = nil
  end
end
if next(touched) then refresh_presence(user, sessions, touched) end
publish_changes()
return { ended, NOW, unpack(ENDED) }
