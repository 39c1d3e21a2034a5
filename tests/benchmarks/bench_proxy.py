"""Benchmark of the service's proxy: the latency it adds to a provider call against a local upstream.

A recorded OpenAI chat completion (and a recorded stream) is served by a local upstream process; the
same request is sent, one call at a time, straight to the upstream and through `payi-otel serve` (a
separate process), with and without a block limit (which adds the reservation before the call). The
three take turns call by call, so that a change of a shared machine's load hits them alike. Added
latency is the difference of the percentiles. Target: < 2 ms at p50, < 10 ms at p99.

Wall-clock percentiles on a small, shared machine still move with its load; the CPU time the service
process (all its threads) spends per proxied call, from /proc/<pid>/stat, moves much less and is
printed beside them (Linux only): from just before a call to just before the service's next one.

    .venv/bin/python tests/benchmarks/bench_proxy.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import httpx

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
CHAT = TESTS / "cassettes/traceloop__openllmetry/openai/test_chat.yaml"
STREAM = TESTS / "cassettes/open-telemetry__opentelemetry-python-contrib/openai/test_chat_completion_streaming.yaml"
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0  # what the proxy may add to a call


def start(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"could not start {command}: {line!r}")
    return proc, line.split("listening on ")[1].strip()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (None where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timings(
    client: httpx.Client,
    body: dict[str, object],
    series: dict[str, tuple[str, dict[str, str]]],
    calls: int,
    service_pid: int,
    proxied: set[str],
) -> dict[str, tuple[list[float], float | None]]:
    """Per series (name -> url and headers), each call's wall-clock time (ms), the series taking turns; for
    the ``proxied`` series, the CPU time the service spent per call (ms)."""
    for _ in range(calls // 10):  # warm-up
        for url, headers in series.values():
            client.post(url, json=body, headers=headers).read()
    times: dict[str, list[float]] = {name: [] for name in series}
    cpu: dict[str, float] = dict.fromkeys(proxied, 0.0)
    last: tuple[str, float | None] | None = None  # the last proxied series and the service's CPU time before it
    for _ in range(calls):
        for name, (url, headers) in series.items():
            if name in proxied:
                now = cpu_seconds(service_pid)
                if last is not None and now is not None and last[1] is not None:
                    cpu[last[0]] += now - last[1]
                last = (name, now)
            t0 = time.perf_counter()
            response = client.post(url, json=body, headers=headers)
            response.read()
            times[name].append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.text
    end = cpu_seconds(service_pid)
    if last is not None and end is not None and last[1] is not None:
        cpu[last[0]] += end - last[1]
    known = end is not None
    return {name: (times[name], cpu[name] * 1000 / calls if name in proxied and known else None) for name in series}


def p(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    from payi_otel.testing.replay import Cassette

    load_before = f"{os.getloadavg()[0]:.2f}"
    results = {}
    with tempfile.TemporaryDirectory(prefix="payi-otel-bench-proxy-") as data:
        for name, cassette in (("chat", CHAT), ("stream", STREAM)):
            body = Cassette.load(cassette).interactions[0].request_body
            upstream, upstream_url = start([sys.executable, str(TESTS / "proxy_upstream.py"), str(cassette)])
            env = {**os.environ, "PAYI_OTEL_UPSTREAM_OPENAI": upstream_url}
            service, base = start(
                [sys.executable, "-m", "payi_otel.cli", "serve", "--port", "0", "--data-dir", f"{data}/{name}"], env
            )
            try:
                key = (Path(data) / name / "default-api-key").read_text().strip()
                with httpx.Client(timeout=30) as client:
                    limit = client.post(
                        f"{base}/api/v1/limits",
                        headers={"xProxy-api-key": key},
                        json={"limit_name": "bench", "max": 1e9, "limit_type": "block"},
                    ).json()["limit"]["limit_id"]
                    auth = {"authorization": "Bearer sk-bench"}
                    proxied = f"{base}/api/v1/proxy/openai/v1/chat/completions"
                    series = {
                        "direct": (f"{upstream_url}/v1/chat/completions", auth),
                        "proxy": (proxied, {**auth, "xProxy-api-key": key}),
                        "proxy + block limit": (proxied, {**auth, "xProxy-api-key": key, "xProxy-Limit-IDs": limit}),
                    }
                    measured = timings(client, body, series, args.calls, service.pid, {"proxy", "proxy + block limit"})
            finally:
                for proc in (service, upstream):
                    proc.terminate()
                    proc.wait(10)
            direct = measured["direct"][0]
            for label in ("proxy", "proxy + block limit"):
                values, cpu = measured[label]
                results[f"{name}: {label}"] = {
                    "direct_p50_ms": round(p(direct, 50), 3),
                    "direct_p99_ms": round(p(direct, 99), 3),
                    "added_p50_ms": round(p(values, 50) - p(direct, 50), 3),
                    "added_p99_ms": round(p(values, 99) - p(direct, 99), 3),
                    "service_cpu_ms": None if cpu is None else round(cpu, 3),
                }
    print(f"load average before and after: {load_before} / {os.getloadavg()[0]:.2f} (2 cores: figures are noisy)")
    print(
        f"{'call':<28} {'direct p50':>10} {'direct p99':>10} {'added p50':>10} {'added p99':>10} "
        f"{'service CPU':>11}  (ms, {args.calls} calls; target: added p50 < {TARGET_P50_MS}, p99 < {TARGET_P99_MS};"
        " service CPU: per proxied call)"
    )
    for label, r in results.items():
        verdict = "met" if r["added_p50_ms"] < TARGET_P50_MS and r["added_p99_ms"] < TARGET_P99_MS else "NOT met"
        print(
            f"{label:<28} {r['direct_p50_ms']:>10} {r['direct_p99_ms']:>10} {r['added_p50_ms']:>10} "
            f"{r['added_p99_ms']:>10} {r['service_cpu_ms']!s:>11}  {verdict}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
