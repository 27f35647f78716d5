#!/usr/bin/env python3
"""Visits at a steady rate for bench/webhooks: every visit is a heartbeat
of a new user, and the same user's DELETE one second later, so RATE users
join and RATE leave every second once it runs. Loopback only, bounded by
DURATION seconds.

Usage: churn.py PORT TOKENS_FILE RATE DURATION
"""
import http.client
import sys
import threading
import time

port, tokens_file, rate, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
tokens = [line.strip() for line in open(tokens_file)]
WORKERS = 16
LINGER = 1.0
start = time.time() + 0.5
visits = int(rate * duration)
late = [0]
errors = [0]


def worker(w):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)

    def send(method, token, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        if body:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/api/stats/heartbeat", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status >= 300:
                errors[0] += 1
        except OSError:
            errors[0] += 1
            conn.close()

    lag = int(rate * LINGER)
    for k in range(w, visits + lag, WORKERS):
        due = start + k / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.1:
            late[0] += 1
        if k < visits:
            send("POST", tokens[k % len(tokens)], '{"module":"pms","resource":"request:%d"}' % (k % 500))
        if k >= lag:
            send("DELETE", tokens[(k - lag) % len(tokens)])


threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"visits={visits} rate={rate}/s late_by_100ms_plus={late[0]} errors={errors[0]}")
