-- ARGV[6] limit, [7] cursor score ("" = first page), [8] cursor member.
-- Newest lastSeen first; ties in reverse bytewise member order. Returns
-- {now, more (0/1), member, score, session json ("" if gone), ...}.
local limit = tonumber(ARGV[6])
local cursor_score = tonumber(ARGV[7])
local cursor_member = ARGV[8]
local picked = {}

local function take(list)
  for i = 1, #list do
    if #picked > limit then return end
    picked[#picked + 1] = list[i]
  end
end

local upper = '+inf'
if cursor_score then
  -- Members sharing the cursor's score, after it in reverse member order.
  -- Redis orders them bytewise ascending; the page continues with those
  -- bytewise below the cursor's member, whether or not it is still there.
  -- (Compared by bytes_below: Lua's `<` follows the server's locale.)
  local same = redis.call('ZRANGE', TIME_KEY, cursor_score, cursor_score, 'BYSCORE')
  local after = {}
  for i = #same, 1, -1 do
    if bytes_below(same[i], cursor_member) then after[#after + 1] = same[i] end
  end
  if cursor_score > CUTOFF then take(after) end
  upper = '(' .. cursor_score
end
if #picked <= limit then
  take(redis.call('ZRANGE', TIME_KEY, upper, '(' .. CUTOFF, 'BYSCORE', 'REV', 'LIMIT', 0, limit + 1 - #picked))
end

local out = { NOW, #picked > limit and 1 or 0 }
for i = 1, math.min(#picked, limit) do
  local field, user = parse_member(picked[i])
  out[#out + 1] = picked[i]
  out[#out + 1] = redis.call('ZSCORE', TIME_KEY, picked[i]) or cursor_score or 0
  local raw = redis.call('HGET', sess_key(user), field)
  if raw and not decode_session(raw) then
    -- Listed as gone (skipped by the caller), and removed.
    drop_broken(user, field)
    repair_presence(user)
    raw = nil
  end
  out[#out + 1] = raw or ''
end
return out
