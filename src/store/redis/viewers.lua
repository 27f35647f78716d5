-- ARGV[6] resource, [7] the most viewers to list. Returns {now, count,
-- user, since, lastSeen, idle (0/1), profile ("" = none), user, ...}: every
-- visible user with a live session whose latest heartbeat named it is
-- counted, the first [7] by (since, user bytes) are listed. Hidden users
-- are neither.
local resource, limit = ARGV[6], tonumber(ARGV[7])
local by_user = {}
local order = {}
for _, m in ipairs(redis.call('SMEMBERS', res_key(resource))) do
  local field, user = parse_member(m)
  local raw = redis.call('HGET', sess_key(user), field)
  local s = raw and decode_session(raw)
  if raw and not s then
    drop_broken(user, field)
    redis.call('SREM', res_key(resource), m)
    repair_presence(user)
  elseif s then
    if s.ls > CUTOFF and s.r == resource then
      local v = by_user[user]
      if not v then
        by_user[user] = { user = user, since = s.rs, last = s.ls, idle = s.i == 1 }
        order[#order + 1] = by_user[user]
      else
        if s.rs < v.since then v.since = s.rs end
        if s.ls > v.last then v.last = s.ls end
        if s.i ~= 1 then v.idle = false end
      end
    end
  end
end
local visible = {}
for _, v in ipairs(order) do
  if redis.call('SISMEMBER', HIDDEN_KEY, v.user) == 0 then visible[#visible + 1] = v end
end
table.sort(visible, function(a, b)
  if a.since ~= b.since then return a.since < b.since end
  return bytes_below(a.user, b.user)
end)
local out = { NOW, #visible }
for i = 1, math.min(limit, #visible) do
  local v = visible[i]
  out[#out + 1] = v.user
  out[#out + 1] = v.since
  out[#out + 1] = v.last
  out[#out + 1] = v.idle and 1 or 0
  out[#out + 1] = redis.call('HGET', PROFILE_KEY, v.user) or ''
end
return out
