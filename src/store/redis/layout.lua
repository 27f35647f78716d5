-- KEYS[1] {prefix}:shards, KEYS[2] {prefix}:time, KEYS[3] {prefix}:day
-- (keys of the unsharded layout). ARGV[1] the configured shard count.
-- Returns the shard count recorded for this prefix, recording ARGV[1]
-- when there is none yet; data from before shards were recorded is one
-- shard's, so it records 1 then.
local recorded = redis.call('GET', KEYS[1])
if recorded then return tonumber(recorded) end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
  recorded = 1
else
  recorded = tonumber(ARGV[1])
end
redis.call('SET', KEYS[1], recorded)
return recorded
