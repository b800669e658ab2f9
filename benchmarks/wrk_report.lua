-- Makes wrk print its result as one JSON line (read by benchmarks/_load.py).
-- Only done() is defined: a response() hook would slow wrk down per request.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, '
      .. '"mean_us": %.0f, "max_us": %.0f, "errors": {"connect": %.0f, "read": %.0f, '
      .. '"write": %.0f, "status": %.0f, "timeout": %.0f}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
