-- ARGV[6] resource. Returns {now, user, since, lastSeen, user, since, ...},
-- one entry per user with a live session whose latest heartbeat named it.
local resource = ARGV[6]
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
        by_user[user] = { since = s.rs, last = s.ls }
        order[#order + 1] = user
      else
        if s.rs < v.since then v.since = s.rs end
        if s.ls > v.last then v.last = s.ls end
      end
    end
  end
end
local out = { NOW }
for _, user in ipairs(order) do
  out[#out + 1] = user
  out[#out + 1] = by_user[user].since
  out[#out + 1] = by_user[user].last
end
return out
