-- wrk script for bench/soak: a population that moves. Script arguments:
-- MINUTE WINDOW STEP. The token file is a pool of users; users
-- [MINUTE*STEP, MINUTE*STEP + WINDOW) of it (wrapping around) are active
-- this minute, so STEP users join and STEP stop each minute (their sessions
-- expire), and after a full turn the same users come back. Of every 20
-- requests: 17 heartbeats over both modules, 2 leaves (DELETE; the user
-- rejoins at their next beat) and 1 read of the module counts.
dofile("bench/report.lua")

local tokens = {}
local first, window = 0, 0
local n = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  local minute, step = tonumber(args[1]), tonumber(args[3])
  window = tonumber(args[2])
  first = minute * step
end

local modules = { '{"module":"pms"}', '{"module":"ih"}' }

function request()
  n = n + 1
  local user = (first + math.random(window) - 1) % #tokens + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[user] }
  local kind = n % 20
  if kind == 0 then
    return wrk.format("GET", "/api/stats/modules", headers)
  elseif kind == 1 or kind == 2 then
    return wrk.format("DELETE", "/api/stats/heartbeat", headers)
  end
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/stats/heartbeat", headers, modules[n % 2 + 1])
end
