"""Benchmark of the local service: startup, single-ingest throughput, bulk throughput, p99 latency
at a fixed rate, and server memory while bulk-ingesting many events.

The server runs as a separate `payi-otel serve` process on 127.0.0.1; the load generator is a lean
asyncio HTTP/1.1 keep-alive client (so the client is not what is measured).

    .venv/bin/python tests/benchmarks/bench_service.py            # full: 1M events for the memory run
    .venv/bin/python tests/benchmarks/bench_service.py --quick    # fewer events, shorter runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

EVENT = {
    "category": "system.openai",
    "resource": "gpt-4o-mini",
    "units": {"text": {"input": 120, "output": 40}, "text_cache_read": {"input": 30}},
    "end_to_end_latency_ms": 420,
    "http_status_code": 200,
}
BULK_EVENT = {**EVENT, "use_case_name": "bench", "user_id": "user-1"}
# Every event names two limits (an application budget and a per-user one): ingest accounts each.
LIMITS = (
    {"limit_id": "bench-org", "limit_name": "org", "max": 1e9},
    {"limit_id": "bench-user", "limit_name": "user-1", "max": 1e9, "threshold": 0.8},
)
LIMIT_HEADER = f"xProxy-Limit-IDs: {','.join(lim['limit_id'] for lim in LIMITS)}\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Conn:
    """One keep-alive HTTP/1.1 connection sending POSTs with a fixed header block."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: bytes, extra: str = "") -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nxProxy-api-key: {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def on_connections(port: int, key: str, clients: int, worker) -> float:
    """Run ``worker(conn)`` on ``clients`` connections at once; returns the seconds they took."""
    conns = [await Conn(port, key).open() for _ in range(clients)]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - start
    finally:
        for c in conns:
            c.close()


async def single_throughput(port: int, key: str, seconds: float, clients: int) -> float:
    body = json.dumps(EVENT).encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(c: Conn) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            status, _ = await c.post("/api/v1/ingest", body, LIMIT_HEADER)
            assert status == 200, status
            done += 1

    elapsed = await on_connections(port, key, clients, worker)
    return done / elapsed


async def bulk_ingest(port: int, key: str, total: int, batch: int, clients: int, on_progress=None) -> float:
    body = json.dumps([{**BULK_EVENT, "limit_ids": [lim["limit_id"] for lim in LIMITS]}] * batch).encode()
    sent = 0
    next_report = [0]

    async def worker(c: Conn) -> None:
        nonlocal sent
        while sent < total:
            sent += batch
            status, payload = await c.post("/api/v1/ingest/bulk", body)
            assert status == 200, payload[:200]
            if on_progress and sent >= next_report[0]:
                next_report[0] += max(total // 10, batch)
                on_progress(sent)

    elapsed = await on_connections(port, key, clients, worker)
    return sent / elapsed


async def fixed_rate_latency(port: int, key: str, rate: int, seconds: float) -> list[float]:
    body = json.dumps(EVENT).encode()
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await Conn(port, key).open())
    latencies: list[float] = []
    interval = 1.0 / rate
    n = int(rate * seconds)
    start = time.perf_counter()

    async def one(scheduled: float) -> None:
        c = await pool.get()
        status, _ = await c.post("/api/v1/ingest", body, LIMIT_HEADER)
        latencies.append(time.perf_counter() - scheduled)  # from the scheduled send time: no coordinated omission
        assert status == 200
        pool.put_nowait(c)

    tasks = []
    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return latencies


async def create_limits(port: int, key: str) -> None:
    c = await Conn(port, key).open()
    try:
        for limit in LIMITS:
            status, payload = await c.post("/api/v1/limits", json.dumps(limit).encode())
            assert status == 201, payload
    finally:
        c.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs and 100k events for the memory run")
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    seconds = 3.0 if args.quick else 8.0
    memory_events = 100_000 if args.quick else 1_000_000

    data_dir = tempfile.mkdtemp(prefix="payi-otel-bench-")
    port = free_port()
    env = {**os.environ, "PAYI_OTEL_DATA_DIR": data_dir, "PAYI_OTEL_PORT": str(port)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "payi_otel.cli", "serve"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        startup = time.perf_counter() - t0
        assert "listening" in line, line
        key = (Path(data_dir) / "default-api-key").read_text().strip()
        print(f"startup (process start -> listening): {startup * 1000:.0f} ms")
        if uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

        asyncio.run(create_limits(port, key))
        print(f"every event names {len(LIMITS)} limits")
        asyncio.run(single_throughput(port, key, 1.0, 4))  # warm-up
        rps = asyncio.run(single_throughput(port, key, seconds, args.clients))
        print(f"single ingest: {rps:,.0f} events/s ({args.clients} keep-alive clients; target >= 2,000)")

        bulk = asyncio.run(bulk_ingest(port, key, 200_000 if not args.quick else 50_000, 1000, 2))
        print(f"bulk ingest: {bulk:,.0f} events/s (batches of 1000; target >= 10,000)")

        lat = asyncio.run(fixed_rate_latency(port, key, 500, seconds))
        print(
            f"single ingest at 500 req/s for {seconds:.0f}s: p50 {pct(lat, 0.5) * 1000:.2f} ms, "
            f"p99 {pct(lat, 0.99) * 1000:.2f} ms, max {max(lat) * 1000:.2f} ms (target p99 < 20 ms)"
        )

        print(f"memory while bulk-ingesting {memory_events:,} events (server RSS):")
        print(f"  before: {rss_mb(proc.pid):.1f} MB")
        last = [0, time.perf_counter()]

        def progress(n: int) -> None:
            now = time.perf_counter()
            segment = (n - last[0]) / (now - last[1]) if now > last[1] else float("nan")
            last[:] = [n, now]
            print(f"  after {n:>9,} events: {rss_mb(proc.pid):.1f} MB; {segment:,.0f} events/s since the last line", flush=True)

        rate = asyncio.run(bulk_ingest(port, key, memory_events, 1000, 2, on_progress=progress))
        print(f"  final: {rss_mb(proc.pid):.1f} MB; sustained bulk rate {rate:,.0f} events/s")
        db = Path(data_dir) / "payi.db"
        wal = Path(data_dir) / "payi.db-wal"
        wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
        print(f"  database size: {db.stat().st_size / 1e6:.0f} MB (+ {wal_mb:.0f} MB write-ahead log)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
