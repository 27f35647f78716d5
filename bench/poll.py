#!/usr/bin/env python3
"""Reads a service's /metrics every 100 ms over one kept-alive connection
until killed, and prints one line per read: "sent received live expired"
(epoch seconds; live = presence_active_sessions summed over modules,
expired = sessions ended by expiry so far), or "sent received - -" for a
failed read. One process and one connection, so the poller disturbs the
load generator beside it as little as a poller can.

Usage: poll.py PORT            # until killed
       poll.py PORT --once     # one read, or exit 1
"""
import http.client
import sys
import time


def counts(body: str) -> tuple[int, int]:
    live = expired = 0
    for line in body.splitlines():
        if line.startswith("presence_active_sessions"):
            live += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("presence_session_duration_seconds_count") and 'ended="expired"' in line:
            expired += int(float(line.rsplit(" ", 1)[1]))
    return live, expired


def main() -> None:
    port = int(sys.argv[1])
    once = sys.argv[2:] == ["--once"]
    conn = None
    while True:
        sent = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read().decode()
            if response.status != 200:
                raise OSError(f"status {response.status}")
            live, expired = counts(body)
            print(f"{sent} {time.time()} {live} {expired}", flush=True)
        except (OSError, http.client.HTTPException):
            if once:
                sys.exit(f"poll.py: GET /metrics on port {port} failed")
            conn = None
            print(f"{sent} {time.time()} - -", flush=True)
        if once:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
