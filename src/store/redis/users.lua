-- ARGV[6..] user ids. Returns, per user in order: {state ("active",
-- "idle", or "" offline), live modules (codes in registry order,
-- comma-separated), lastSeen ("" = unknown), profile ("" = none)}, after
-- {now}. A hidden user reads as never seen.
local out = { NOW }
for i = 6, #ARGV do
  local user = ARGV[i]
  if redis.call('SISMEMBER', HIDDEN_KEY, user) == 1 then
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    local sessions, dropped = sessions_of(user)
    if dropped then repair_presence(user) end
    local present, awake = {}, false
    for _, s in pairs(sessions) do
      if s.ls > CUTOFF then
        present[s.m] = true
        if s.i ~= 1 then awake = true end
      end
    end
    local modules = {}
    for _, code in ipairs(CODES) do
      if present[code] then modules[#modules + 1] = code end
    end
    local state = ''
    if #modules > 0 then state = awake and 'active' or 'idle' end
    out[#out + 1] = state
    out[#out + 1] = table.concat(modules, ',')
    local seen = redis.call('ZSCORE', SEEN_KEY, user)
    -- A score no heartbeat wrote (before 2000, after now: a hand edit)
    -- is unknown, never shown as 1970 or year 10000.
    seen = tonumber(seen)
    local plausible = seen and seen >= 946684800000 and seen <= LATEST
    out[#out + 1] = plausible and string.format('%d', seen) or ''
    -- A profile is served until PROFILE_CUTOFF, swept or not.
    local profile = ''
    if seen and seen > PROFILE_CUTOFF then
      profile = redis.call('HGET', PROFILE_KEY, user) or ''
    end
    out[#out + 1] = profile
  end
end
return out
