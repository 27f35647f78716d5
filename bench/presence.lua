-- wrk script for bench/fanout.py: heartbeats from many users, user n on
-- resource request:(n % RESOURCES), so the watched resources have viewers.
--   TOKENS     the token file, one per line (bench/mint.py makes it);
--   RESOURCES  how many resources (default 1000);
--   FLIP       when set, each user's beats alternate active and idle: every
--              beat is a change that the presence streams must carry.
dofile("bench/report.lua")

local tokens = {}
local i = 0
local resources = tonumber(os.getenv("RESOURCES") or "") or 1000
local flip = os.getenv("FLIP")
if flip == "" then flip = nil end
local turn = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = math.random(#tokens)
end

function request()
  i = i % #tokens + 1
  if i == 1 then turn = turn + 1 end
  local state = (flip and turn % 2 == 1) and "idle" or "active"
  local body = string.format('{"module":"pms","resource":"request:%d","state":"%s"}', (i - 1) % resources, state)
  return wrk.format("POST", "/api/stats/heartbeat", {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }, body)
end
