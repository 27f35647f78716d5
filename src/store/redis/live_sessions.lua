-- Returns {live sessions of each module...} in registry order.
local out = {}
for _, code in ipairs(CODES) do
  out[#out + 1] = redis.call('ZCOUNT', msess_key(code), '(' .. CUTOFF, '+inf')
end
return out
