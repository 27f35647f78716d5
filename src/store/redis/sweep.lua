-- ARGV[6] batch size. Removes up to a batch of expired sessions and prunes
-- the presence sets. Returns {removed, now, ended sessions (code, length
-- ms, expired)...}.
local batch = tonumber(ARGV[6])
local expired = redis.call('ZRANGE', TIME_KEY, '-inf', CUTOFF, 'BYSCORE', 'LIMIT', 0, batch)
for _, m in ipairs(expired) do
  local field, user = parse_member(m)
  local raw = redis.call('HGET', sess_key(user), field)
  local s = raw and decode_session(raw)
  if s then
    remove_session(user, field, s)
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
publish_changes()
return { #expired, NOW, unpack(ENDED) }
