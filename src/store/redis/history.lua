-- ARGV[6] minutes. Returns {now, minute, field count, field, value, ...,
-- minute, field count, ...} for the minutes of the window that have data.
local minutes = tonumber(ARGV[6])
local last = NOW - (NOW % 60000)
local out = { NOW }
for m = last - (minutes - 1) * 60000, last, 60000 do
  local flat = redis.call('HGETALL', P .. ':hist:' .. string.format('%d', m))
  if #flat > 0 then
    out[#out + 1] = m
    out[#out + 1] = #flat
    for i = 1, #flat do out[#out + 1] = flat[i] end
  end
end
return out
