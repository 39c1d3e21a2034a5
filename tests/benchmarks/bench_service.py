"""Benchmark of the local service: startup, single-ingest throughput, bulk throughput, p99 latency
at a fixed rate, and server memory while bulk-ingesting many events.

The server runs as a separate `payi-otel serve` process on 127.0.0.1; the load generator is a lean
asyncio HTTP/1.1 keep-alive client (so the client is not what is measured).

    .venv/bin/python tests/benchmarks/bench_service.py            # full: 1M events for the memory run
    .venv/bin/python tests/benchmarks/bench_service.py --quick    # fewer events, shorter runs

On PostgreSQL: ``--database-url postgresql://...`` (default ``$PAYI_OTEL_DATABASE_URL``; each run creates an
application of its own, so a database may be used again), and ``--instances 2`` runs two service processes on
it, the clients' connections spread over both.
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

    async def open(self) -> Conn:
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


async def on_connections(ports: list[int], key: str, clients: int, worker) -> float:
    """Run ``worker(conn)`` on ``clients`` connections at once (spread over ``ports``); returns the seconds."""
    conns = [await Conn(ports[i % len(ports)], key).open() for i in range(clients)]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - start
    finally:
        for c in conns:
            c.close()


async def single_throughput(
    ports: list[int], key: str, seconds: float, clients: int, counted: list[int] | None = None
) -> float:
    body = json.dumps(EVENT).encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(c: Conn) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            status, _ = await c.post("/api/v1/ingest", body, LIMIT_HEADER)
            assert status == 200, status
            done += 1

    elapsed = await on_connections(ports, key, clients, worker)
    if counted is not None:
        counted.append(done)
    return done / elapsed


async def bulk_ingest(
    ports: list[int], key: str, total: int, batch: int, clients: int, on_progress=None, counted: list[int] | None = None
) -> float:
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

    elapsed = await on_connections(ports, key, clients, worker)
    if counted is not None:
        counted.append(sent)
    return sent / elapsed


async def fixed_rate_latency(ports: list[int], key: str, rate: int, seconds: float) -> list[float]:
    body = json.dumps(EVENT).encode()
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for i in range(32):
        pool.put_nowait(await Conn(ports[i % len(ports)], key).open())
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


async def create_limits(ports: list[int], key: str) -> None:
    c = await Conn(ports[0], key).open()
    try:
        for limit in LIMITS:
            status, payload = await c.post("/api/v1/limits", json.dumps(limit).encode())
            assert status == 201, payload
    finally:
        c.close()


def create_application(env: dict[str, str], data_dir: str) -> str:
    """A new application for this run (its limits and requests start empty, also on a database used before:
    the default application's key file is written only by the instance that created it); returns its key."""
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    created = subprocess.run(
        [sys.executable, "-m", "payi_otel.cli", "apps", "create", name, "--group", "bench", "--data-dir", data_dir],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_pids(url: str | None) -> list[int]:
    """The processes of a PostgreSQL server on this machine (its backends and background workers) as
    ``pg_stat_activity`` lists them; none for SQLite or a remote server."""
    if not url or not any(host in url for host in ("@127.0.0.1", "@localhost", "@[::1]")):
        return []
    import psycopg

    with psycopg.connect(url) as pg:
        return [pid for (pid,) in pg.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")]


class CpuMeter:
    """CPU time the service processes, the database server and this client spend during a phase: per
    event it is steadier than throughput on a shared machine (it does not count time spent waiting)."""

    def __init__(self, service_pids: list[int], database_url: str | None) -> None:
        self.service_pids = service_pids
        self.database_url = database_url

    def __enter__(self) -> CpuMeter:
        self.db_pids = database_pids(self.database_url)
        self.start = self._now()
        return self

    def _now(self) -> tuple[float, float, float]:
        return (
            sum(cpu_seconds(pid) for pid in self.service_pids),
            sum(cpu_seconds(pid) for pid in self.db_pids),
            time.process_time(),
        )

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.service, self.database, self.client = (b - a for a, b in zip(self.start, end, strict=True))

    def per_event(self, events: float) -> str:
        us = [1e6 * part / max(events, 1) for part in (self.service, self.database, self.client)]
        database = f", database {us[1]:.0f}" if self.db_pids else ""
        return f"CPU per event: service {us[0]:.0f} us{database}, client {us[2]:.0f} us"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs and 100k events for the memory run")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument(
        "--database-url",
        default=os.environ.get("PAYI_OTEL_DATABASE_URL"),
        help="PostgreSQL database to run on (default $PAYI_OTEL_DATABASE_URL; unset: SQLite)",
    )
    ap.add_argument("--instances", type=int, default=1, help="service processes on the one database (PostgreSQL)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory run (throughput and latency only)")
    ap.add_argument(
        "--single-only",
        action="store_true",
        help="run the single-ingest throughput phase only (no bulk, latency or memory run)",
    )
    args = ap.parse_args()
    if args.instances > 1 and not args.database_url:
        ap.error("--instances above 1 needs --database-url (several instances share a PostgreSQL database)")
    seconds = 3.0 if args.quick else 8.0
    memory_events = 100_000 if args.quick else 1_000_000

    data_dir = tempfile.mkdtemp(prefix="payi-otel-bench-")
    ports = [free_port() for _ in range(args.instances)]
    env = {k: v for k, v in os.environ.items() if k != "PAYI_OTEL_DATABASE_URL"}
    if args.database_url:
        env["PAYI_OTEL_DATABASE_URL"] = args.database_url
    procs = []
    try:
        for i, port in enumerate(ports):  # one after the other: the first creates the default application
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "payi_otel.cli", "serve"],
                stdout=subprocess.PIPE,
                text=True,
                env={**env, "PAYI_OTEL_DATA_DIR": f"{data_dir}/{i}", "PAYI_OTEL_PORT": str(port)},
            )
            procs.append(proc)
            line = proc.stdout.readline()
            startup = time.perf_counter() - t0
            assert "listening" in line, line
            print(f"startup of instance {i} (process start -> listening): {startup * 1000:.0f} ms")
        print(f"store: {'PostgreSQL' if args.database_url else 'SQLite'}, {args.instances} instance(s)")
        key = create_application(env, f"{data_dir}/0")
        proc = procs[0]
        if uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

        asyncio.run(create_limits(ports, key))
        print(f"every event names {len(LIMITS)} limits")
        asyncio.run(single_throughput(ports, key, 1.0, 4))  # warm-up
        service_pids = [p.pid for p in procs]
        counted: list[int] = []
        with CpuMeter(service_pids, args.database_url) as cpu:
            rps = asyncio.run(single_throughput(ports, key, seconds, args.clients, counted))
        print(f"single ingest: {rps:,.0f} events/s ({args.clients} keep-alive clients; target >= 2,000)")
        print(f"  {cpu.per_event(counted[0])}")
        if args.single_only:
            return

        bulk_events = 200_000 if not args.quick else 50_000
        with CpuMeter(service_pids, args.database_url) as cpu:
            bulk = asyncio.run(bulk_ingest(ports, key, bulk_events, 1000, 2 * args.instances, counted=counted))
        print(f"bulk ingest: {bulk:,.0f} events/s (batches of 1000; target >= 10,000)")
        print(f"  {cpu.per_event(counted[-1])}")

        lat = asyncio.run(fixed_rate_latency(ports, key, 500, seconds))
        print(
            f"single ingest at 500 req/s for {seconds:.0f}s: p50 {pct(lat, 0.5) * 1000:.2f} ms, "
            f"p99 {pct(lat, 0.99) * 1000:.2f} ms, max {max(lat) * 1000:.2f} ms (target p99 < 20 ms)"
        )

        if args.no_memory:
            return
        print(f"memory while bulk-ingesting {memory_events:,} events (server RSS):")
        print(f"  before: {rss_mb(proc.pid):.1f} MB")
        last = [0, time.perf_counter()]

        def progress(n: int) -> None:
            now = time.perf_counter()
            segment = (n - last[0]) / (now - last[1]) if now > last[1] else float("nan")
            last[:] = [n, now]
            print(
                f"  after {n:>9,} events: {rss_mb(proc.pid):.1f} MB; {segment:,.0f} events/s since the last line",
                flush=True,
            )

        rate = asyncio.run(bulk_ingest(ports, key, memory_events, 1000, 2 * args.instances, on_progress=progress))
        print(f"  final: {rss_mb(proc.pid):.1f} MB; sustained bulk rate {rate:,.0f} events/s")
        if args.database_url:
            import psycopg

            with psycopg.connect(args.database_url) as pg:
                size = pg.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            print(f"  database size: {size / 1e6:.0f} MB")
        else:
            db = Path(data_dir) / "0" / "payi.db"
            wal = Path(data_dir) / "0" / "payi.db-wal"
            wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
            print(f"  database size: {db.stat().st_size / 1e6:.0f} MB (+ {wal_mb:.0f} MB write-ahead log)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
