-- wrk script: heartbeats from many distinct users, one token each, over
-- both modules. Tokens come from the file named by TOKENS (bench/run makes it);
-- the path from TARGET_PATH (default the heartbeat endpoint; bench/run also
-- points it at the bare endpoints of examples/bare.rs).
local tokens = {}
local i = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  -- Threads start at different users.
  i = math.random(#tokens)
end

local modules = { '{"module":"pms"}', '{"module":"ih"}' }
local path = os.getenv("TARGET_PATH") or "/api/stats/heartbeat"

function request()
  i = i % #tokens + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }, modules[i % 2 + 1])
end

local errors = 0
function response(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

function done(summary, latency, requests)
  local s = summary
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f non2xx=%d socket_errors=%d requests=%d\n",
    s.requests / (s.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    s.requests))
end
