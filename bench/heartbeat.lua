-- wrk script: heartbeats from many distinct users, one token each, over
-- both modules. Settings from the environment:
--   TOKENS       the token file, one per line (bench/mint.py makes it);
--   TARGET_PATH  where to POST (default the heartbeat endpoint; bench/run
--                also points it at the bare endpoints of examples/bare.rs);
--   START        go through the users in order from this one (bench/population:
--                N requests make N sessions); without it, start anywhere;
--   READ_PATH    instead of heartbeats, GET this path with the first token;
--   HALF_IDLE    when set, every other user (in pairs: pms, ih) sends
--                "state":"idle" (bench/population: half the sessions idle).
dofile("bench/report.lua")

local tokens = {}
local i = 0
local path = os.getenv("TARGET_PATH") or "/api/stats/heartbeat"
local read_path = os.getenv("READ_PATH")
if read_path == "" then read_path = nil end

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  local start = tonumber(os.getenv("START") or "")
  i = start and start % #tokens or math.random(#tokens)
end

local modules = { '{"module":"pms"}', '{"module":"ih"}' }
if os.getenv("HALF_IDLE") then
  modules = { '{"module":"pms"}', '{"module":"ih"}',
              '{"module":"pms","state":"idle"}', '{"module":"ih","state":"idle"}' }
end

function request()
  if read_path then
    return wrk.format("GET", read_path, { ["Authorization"] = "Bearer " .. tokens[1] })
  end
  i = i % #tokens + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }, modules[i % #modules + 1])
end
