-- Shared by the wrk scripts of bench/: one RESULT line that the shell
-- scripts read. Loaded with dofile from the repository's root.
function done(summary, latency, requests)
  local s = summary
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f non2xx=%d socket_errors=%d requests=%d\n",
    s.requests / (s.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    s.requests))
end
