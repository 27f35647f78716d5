-- wrk script for bench/population: heartbeats from the users of the token
-- file in order, starting after the first START (then again from the
-- start), one session each, so N requests make N sessions. READ_PATH
-- switches it to GETs of a read endpoint with the first token.
local tokens = {}
local i = 0
local read_path = os.getenv("READ_PATH")
if read_path == "" then read_path = nil end

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = tonumber(os.getenv("START") or "0") % #tokens
end

local modules = { '{"module":"pms"}', '{"module":"ih"}' }

function request()
  if read_path then
    return wrk.format("GET", read_path, { ["Authorization"] = "Bearer " .. tokens[1] })
  end
  i = i % #tokens + 1
  return wrk.format("POST", "/api/stats/heartbeat", {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }, modules[i % 2 + 1])
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
