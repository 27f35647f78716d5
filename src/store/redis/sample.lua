-- ARGV[6] the counts to record, comma-separated in registry order, or ""
-- to count here. Records each module's activeNow as this minute's sample;
-- the first sample of a minute wins. With several shards the instance
-- sums the shards' counts and records them on the first shard; the peak is
-- then the shards' own (see `history` in redis.rs). Returns {now}.
local given = (ARGV[6] and ARGV[6] ~= '') and split(ARGV[6], ',') or nil
for i, code in ipairs(CODES) do
  local n = given and tonumber(given[i]) or live_count(pres_key(code))
  local key = hist_key(NOW)
  if redis.call('HSETNX', key, code .. ':s', n) == 1 then
    redis.call('EXPIRE', key, HIST_KEEP_S)
    if not given then see_peak(code, n) end
  end
end
return { NOW }
