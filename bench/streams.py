#!/usr/bin/env python3
"""Idle SSE streams: what thousands of them cost, and that heartbeats don't notice.

Usage: bench/streams.py PRESENCE_BIN [STREAMS]

Starts the service (demo mode off, its own secret, loopback), measures its
RSS, opens STREAMS (default 5000) SSE connections from 50 users that read
their first event and then never read again, measures RSS again, and times
500 sequential heartbeats with and without the streams open. Loopback only,
bounded: every connection is closed and the service stopped at the end.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

SECRET = b"bench-streams-secret-bench-streams-secret"


def token(user: str) -> str:
    b64 = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    sig = b64(hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def open_stream(port: int, user: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/stats/stream?access_token={token(user)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"event: modules")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head[:80]
    return writer  # never read again


def heartbeat_latencies(port: int, n: int) -> list:
    out = []
    tok = token("beater")
    body = b'{"module":"pms"}'
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(n):
            req = (
                f"POST /api/stats/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t = time.perf_counter()
            s.sendall(req)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(rest) < length:
                rest += s.recv(65536)
            out.append((time.perf_counter() - t) * 1000)
            assert head.startswith(b"HTTP/1.1 200"), head
    return out


def summary(lat: list) -> str:
    lat = sorted(lat)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms"


async def main() -> None:
    binary = sys.argv[1]
    streams = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    resource.setrlimit(resource.RLIMIT_NOFILE, (streams + 1024, streams + 1024))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": os.environ["PATH"], "JWT_SECRET": SECRET.decode(), "LISTEN_ADDR": f"127.0.0.1:{port}",
        "RUST_LOG": "warn", "MAX_STREAMS": str(streams + 10), "MAX_STREAMS_PER_USER": "1000",
        "RATE_LIMIT": "1000000,1ms",
    }
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        heartbeat_latencies(port, 200)  # warm up
        before = rss_kib(server.pid)
        quiet = heartbeat_latencies(port, 500)
        writers = []
        for batch in range(0, streams, 500):
            writers += await asyncio.gather(*(open_stream(port, f"u{i % 50}") for i in range(batch, min(streams, batch + 500))))
        await asyncio.sleep(2)
        after = rss_kib(server.pid)
        busy = heartbeat_latencies(port, 500)
        print(f"streams open: {len(writers)}")
        print(f"service RSS: {before} KiB before, {after} KiB with the streams: {(after - before) * 1024 / len(writers):.0f} bytes per idle stream")
        print(f"500 sequential heartbeats without streams: {summary(quiet)}")
        print(f"500 sequential heartbeats with {len(writers)} idle streams (the first changes the counts: one event to every stream): {summary(busy)}")
        for w in writers:
            w.close()
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
