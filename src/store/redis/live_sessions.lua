-- Returns {live sessions of each module...} in registry order.
local out = {}
for _, code in ipairs(CODES) do
  out[#out + 1] = live_count(msess_key(code))
end
return out
