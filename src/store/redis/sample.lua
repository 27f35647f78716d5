-- Records each module's activeNow as this minute's sample; the first
-- sample of a minute wins. Returns {now}.
for _, code in ipairs(CODES) do
  local n = live_count(pres_key(code))
  local key = hist_key(NOW)
  if redis.call('HSETNX', key, code .. ':s', n) == 1 then
    redis.call('EXPIRE', key, HIST_KEEP_S)
    see_peak(code, n)
  end
end
return { NOW }
