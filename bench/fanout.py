#!/usr/bin/env python3
"""Presence stream fan-out: what 5,000 open presence streams cost heartbeats.

Usage: bench/fanout.py PRESENCE_BIN [STREAMS] [RESOURCES]

Starts the service (memory store, pinned to cpu 0, rate limit lifted),
mints 10,000 users (user n views request:(n % RESOURCES)) and drives
heartbeats at full load with wrk (64 connections, cpu 1) for 10 s in four
runs: steady (each user beats the same resource and state: no change to
carry) and churn (each user's beats alternate active and idle: every beat is
a change), each without and with STREAMS (default 5,000) presence streams,
one resource each, spread over RESOURCES (default 1,000) resources. The
streams are read by this script (also on cpu 1). While streams are open, a
probe user flips its state on request:0..9 every 200 ms, and the delay from
sending that heartbeat to the first event showing it on each of the five
streams watching that resource is recorded (p50, p99). Bytes per open
stream: the service's RSS with the streams open minus before, divided by
their number. Loopback only, bounded in time; everything is stopped at the
end.
"""
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "bench-fanout-secret-bench-fanout-secret"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import streams as streams_bench  # noqa: E402
from streams import rss_kib  # noqa: E402


def token(user: str) -> str:
    streams_bench.SECRET = SECRET.encode()
    return streams_bench.token(user)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Streams:
    def __init__(self):
        self.bytes = 0
        self.events = 0
        self.writers = []
        self.probe = {}  # resource -> (state, sent at)
        self.seen = {}  # (resource, state, sent at) -> streams that saw it
        self.delays = []

    async def open(self, port, n, resources):
        tokens = [token(f"w{u}") for u in range(50)]
        async def one(i):
            r = f"request:{i % resources}"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /api/presence/stream?resources={r}&access_token={tokens[i % 50]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n", 1)[0], head[:120]
            self.writers.append(writer)
            asyncio.create_task(self.read(reader, r, i % resources < 10))
        for batch in range(0, n, 250):
            await asyncio.gather(*(one(i) for i in range(batch, min(n, batch + 250))))

    async def read(self, reader, resource_id, probed):
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            self.bytes += len(chunk)
            self.events += chunk.count(b"event: presence")
            if not probed:
                continue
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for line in block.split(b"\n"):
                    if line.startswith(b"data:") and b'"probe"' in line:
                        self.check(resource_id, json.loads(line[5:]))

    def check(self, resource_id, doc):
        sent = self.probe.get(resource_id)
        if not sent:
            return
        state, at = sent
        for v in doc["viewers"]:
            if v["userId"] == "probe" and v["state"] == state:
                key = (resource_id, state, at)
                if key not in self.seen:
                    self.seen[key] = 0
                if self.seen[key] < 5:
                    self.seen[key] += 1
                    self.delays.append((time.perf_counter() - at) * 1000)


async def probe(port, streams, stop):
    tok = token("probe")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k, state = 0, "active"
    while not stop.is_set():
        r = f"request:{k % 10}"
        state = "idle" if state == "active" else "active"
        body = json.dumps({"module": "ih", "clientId": f"c{k % 10}", "resource": r, "state": state}).encode()
        streams.probe[r] = (state, time.perf_counter())
        writer.write(
            f"POST /api/stats/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        await reader.readexactly(length)
        k += 1
        await asyncio.sleep(0.2)
    writer.close()


async def wrk(port, tokens_file, resources, flip):
    env = dict(os.environ, TOKENS=tokens_file, RESOURCES=str(resources), FLIP="1" if flip else "")
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", "wrk", "-t1", "-c64", "-d10s", "-s", "bench/presence.lua", f"http://127.0.0.1:{port}",
        env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    line = [l for l in out.decode().splitlines() if l.startswith("RESULT")][0]
    return dict(kv.split("=") for kv in line.split()[1:])


async def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    resources = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    os.chdir(os.path.dirname(HERE))
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 2048, n + 2048))
    tmp = tempfile.mkdtemp()
    tokens_file = os.path.join(tmp, "tokens.txt")
    with open(tokens_file, "w") as f:
        subprocess.run([sys.executable, "bench/mint.py", SECRET, "10000"], stdout=f, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "JWT_SECRET": SECRET, "LISTEN_ADDR": f"127.0.0.1:{port}",
           "RUST_LOG": "warn", "MAX_STREAMS": str(n + 10), "MAX_STREAMS_PER_USER": "1000",
           "RATE_LIMIT": "1000000,1ms"}
    server = subprocess.Popen(["taskset", "-c", "0", binary], env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"machine: {os.cpu_count()} cores; service on cpu 0; wrk, the stream readers and the probe on cpu 1")
        steady = await wrk(port, tokens_file, resources, False)
        churn = await wrk(port, tokens_file, resources, True)
        await asyncio.sleep(1)
        before = rss_kib(server.pid)
        streams = Streams()
        await streams.open(port, n, resources)
        await asyncio.sleep(2)
        after = rss_kib(server.pid)
        results = {}
        for label, flip in (("steady", False), ("churn", True)):
            stop = asyncio.Event()
            streams.delays.clear()
            bytes0, events0 = streams.bytes, streams.events
            p = asyncio.create_task(probe(port, streams, stop))
            results[label] = await wrk(port, tokens_file, resources, flip)
            stop.set()
            await p
            results[label]["delays"] = list(streams.delays)
            results[label]["events"] = streams.events - events0
            results[label]["mib"] = (streams.bytes - bytes0) / 2**20
        print(f"presence streams open: {len(streams.writers)} over {resources} resources")
        print(f"service RSS: {before} KiB before, {after} KiB with the streams: {(after - before) * 1024 / max(1, len(streams.writers)):.0f} bytes per open stream")
        for label, base in (("steady", steady), ("churn", churn)):
            r = results[label]
            cost = 100 * (1 - float(r["rps"]) / float(base["rps"]))
            d = r["delays"]
            print(f"{label}: heartbeats {base['rps']} req/s (p99 {base['p99_ms']} ms) without streams, "
                  f"{r['rps']} req/s (p99 {r['p99_ms']} ms) with them: {cost:.1f} % fewer; "
                  f"{r['events']} events ({r['mib']:.1f} MiB) in 10 s; "
                  f"heartbeat-to-event delay over {len(d)} deliveries: p50 {pct(d, 0.5):.0f} ms, p99 {pct(d, 0.99):.0f} ms")
        for w in streams.writers:
            w.close()
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
