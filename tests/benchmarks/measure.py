"""The measuring machinery the overhead benchmarks share: paired CPU-time batches, per-chunk pairs, Python call
counts, resident memory, and the Pay-i journal every call of ours is appended to.

Each benchmark builds its own setup (an object with ``switch(on)``, a ``spans`` counter and, for
:func:`python_calls`, ``mode``, ``instrumentor``, ``tp`` and ``mp``) and its calls; the figures are made here.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BATCH = 25  # calls per timed batch
SETTLE = 3  # untimed calls after each instrumentation switch


def timed(fn, n: int) -> tuple[float, float]:
    """(thread CPU seconds, wall seconds) per call over ``n`` calls."""
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.thread_time() - c0) / n, (time.perf_counter() - w0) / n


def paired_overhead(setup: Any, instrumented: Any, bare: Any, calls: int, mode: str, exact: bool = True) -> dict:
    """Timed batches of the mode alternating with batches of the bare SDK (order flipped every pair);
    ``setup`` has ``switch(on)`` and a ``spans`` counter. The added cost is the median paired difference.
    Checks that the instrumented batches made one span per call (``exact=False``: at least one, for tracers
    that make several)."""
    pairs = max(calls // (2 * BATCH), 4)
    cpu = {"on": [], "off": []}
    wall = {"on": [], "off": []}
    spans_on = 0
    for i in range(pairs):
        for on in (True, False) if i % 2 == 0 else (False, True):
            setup.switch(on)
            fn = instrumented if on else bare
            for _ in range(SETTLE):
                fn()
            before = setup.spans
            c, w = timed(fn, BATCH)
            if on:
                spans_on += setup.spans - before
            elif setup.spans != before:
                raise RuntimeError(f"{mode}: the bare batch produced spans")
            key = "on" if on else "off"
            cpu[key].append(c)
            wall[key].append(w)
    if mode != "bare" and (spans_on != pairs * BATCH if exact else spans_on < pairs * BATCH):
        raise RuntimeError(f"{mode}: {spans_on} spans for {pairs * BATCH} calls (instrumentation not active?)")
    us = 1e6
    return {
        "mode": mode,
        "calls": pairs * BATCH * 2,
        "cpu_us": statistics.median(cpu["on"]) * us,
        "cpu_min_us": min(cpu["on"]) * us,
        "added_cpu_us": statistics.median(a - b for a, b in zip(cpu["on"], cpu["off"], strict=True)) * us,
        "added_wall_us": statistics.median(a - b for a, b in zip(wall["on"], wall["off"], strict=True)) * us,
        "wall_us": statistics.median(wall["on"]) * us,
    }


def python_calls(setup: Any, instrumented: Any, bare: Any) -> dict:
    """Python function calls the mode adds per call (cProfile's count, builtins included): a
    deterministic measure of the work, immune to machine noise. For the instrumentations it is split by
    switching parts off: metrics (no-op meter provider), then spans too (no-op tracer provider)."""
    import cProfile
    import pstats

    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    def count(fn, n: int = 100) -> float:
        for _ in range(10):
            fn()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            fn()
        pr.disable()
        return pstats.Stats(pr).total_calls / n

    base = count(bare)
    setup.switch(True)
    total = round(count(instrumented) - base)
    setup.switch(False)
    out = {"mode": setup.mode, "total": total}
    if setup.instrumentor is not None and setup.mp is not None:
        setup.instrumentor.instrument(tracer_provider=setup.tp, meter_provider=NoOpMeterProvider())
        no_metrics = round(count(instrumented) - base)
        setup.instrumentor.uninstrument()
        setup.instrumentor.instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
        own = round(count(instrumented) - base)
        setup.instrumentor.uninstrument()
        out["by"] = {"metrics": total - no_metrics, "span": no_metrics - own, "own code": own}
    return out


def paired_per_chunk(setup: Any, one: Any, streams: int, n: int) -> dict:
    """``streams`` runs of the stream call ``one`` (``n`` chunks each), instrumented and bare in
    alternating order; medians per chunk of the bare time and of the paired differences, CPU time."""
    diffs, bare = [], []
    for i in range(streams):
        times = {}
        for on in (True, False) if i % 2 == 0 else (False, True):
            setup.switch(on)
            one()
            times[on] = timed(one, 3)[0]
        diffs.append((times[True] - times[False]) / n)
        bare.append(times[False] / n)
    setup.switch(False)
    return {"bare_us_per_chunk": statistics.median(bare) * 1e6, "added_us_per_chunk": statistics.median(diffs) * 1e6}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_split() -> str:
    """Heap and file-backed resident memory (the journal's mapped segments are file pages), in MB."""
    try:
        with open("/proc/self/status") as f:
            kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("RssAnon", "RssFile")}
    except (OSError, ValueError):  # not Linux
        return ""
    return f"heap {kb.get('RssAnon', 0) / 1024:.0f} + file {kb.get('RssFile', 0) / 1024:.0f}"


def rss_over(call: Any, calls: int) -> dict:
    """Resident memory (MB) and its heap / file split after each fifth of ``calls`` calls of ``call``."""
    marks, split = {}, {}
    for i in range(1, calls + 1):
        call()
        if i % (calls // 5) == 0:
            marks[i] = round(_rss_mb(), 1)
            split[i] = _rss_split()
    return {"rss_mb": marks, "split": split}


def print_rss(measured: dict, calls: int) -> None:
    """The memory check's verdict: flat when it grew by less than 5 MB after the first fifth."""
    mem = measured["rss_mb"]
    first, last = next(iter(mem.values())), list(mem.values())[-1]
    print(f"\nRSS with ours over {calls} calls (MB at call count): {mem}")
    print(f"  of which (MB): {measured['split']}")
    print(f"  growth after the first fifth: {last - first:+.1f} MB ({'flat' if last - first < 5 else 'GROWING'})")


def payi_journal() -> Any:
    """The durable call journal every call of ours is appended to before it returns (as with the Pay-i exporter in
    any real setup): a Pay-i exporter in offline mode, whose events go to a file, off the measured thread."""
    import atexit
    import shutil
    import tempfile

    from payi_otel.exporters import PayiSpanExporter

    spool = tempfile.mkdtemp(prefix="payi-bench-")
    exporter = PayiSpanExporter(offline_file=f"{spool}/events.jsonl", spool_dir=spool)

    def remove() -> None:  # at exit: the journal's thread stopped first, then its directory removed
        exporter.shutdown()
        shutil.rmtree(spool, ignore_errors=True)

    atexit.register(remove)
    return exporter


def own_venv(venv: Path) -> Path:
    """``venv`` suffixed with a digest of this interpreter's environment: the throwaway venv sees the packages
    of the environment that created it (the project installed in editable mode from one checkout), so two
    checkouts on one machine must not share it, or one would measure the other's code."""
    digest = hashlib.sha256(sys.prefix.encode()).hexdigest()[:10]
    return venv.with_name(f"{venv.name}-{digest}")


def spread(values: list[float], digits: int = 1) -> str:
    return f"[{min(values):.{digits}f} .. {max(values):.{digits}f}]"
