-- Returns {now, users active anywhere, activeNow, idleNow, today,
-- totalUsers, activeNow, ...} in registry order.
roll_day()
local out = { NOW, live_count(ANY_KEY) }
for _, code in ipairs(CODES) do
  local present = live_count(pres_key(code))
  out[#out + 1] = present
  out[#out + 1] = present - live_count(awake_key(code))
  out[#out + 1] = DAY and redis.call('SCARD', today_key(code)) or 0
  out[#out + 1] = redis.call('SCARD', total_key(code))
end
return out
