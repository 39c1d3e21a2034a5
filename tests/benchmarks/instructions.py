"""Machine instructions a mode adds per call on the calling thread, counted by valgrind's callgrind.

CPU time on a shared virtual machine drifts by a third between minutes, and a process that lands in a slow
spell inflates its mode's figure. Instruction counts do not drift: they are the deterministic companion of
the CPU-time figures (they miss what instructions do not show, such as cache misses and the kernel's work).

A worker process runs under ``valgrind --tool=callgrind --separate-threads=yes --dump-before=getppid``, and
each ``os.getppid()`` call of :func:`marked_rounds` closes a segment: callgrind writes the calling thread's
counts since the previous mark to a file of their own. :func:`added_per_call` runs such a worker and reads
the segments back: per round, (instrumented segment - bare segment) / calls.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import SETTLE  # untimed calls after each switch

CALLS = 40  # calls per measured run (instrumented, then bare)
ROUNDS = 4
WARM_UP = 150  # calls per warm-up phase (instrumented, bare, instrumented)


def available() -> bool:
    return shutil.which("valgrind") is not None


def marked_rounds(
    setup: Any, instrumented: Callable[[], Any], bare: Callable[[], Any], calls: int, rounds: int
) -> dict:
    """The worker side: warm up, then ``rounds`` x (``calls`` instrumented calls, ``calls`` bare calls), each
    run of calls between two marks. ``setup`` has ``switch(on)`` and a ``spans`` counter."""
    for on in (True, False, True):
        setup.switch(on)
        for _ in range(WARM_UP):
            (instrumented if on else bare)()
    mark = os.getppid  # callgrind dumps before each call (--dump-before=getppid)
    mark()
    for _ in range(rounds):
        for on in (True, False):
            setup.switch(on)
            fn = instrumented if on else bare
            for _ in range(SETTLE):
                fn()
            before = setup.spans
            mark()
            for _ in range(calls):
                fn()
            mark()
            if on and setup.mode != "bare" and setup.spans - before != calls:
                raise RuntimeError(f"{setup.mode}: {setup.spans - before} spans for {calls} calls")
    return {"mode": setup.mode, "calls": calls, "rounds": rounds}


def _total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{path}: no instruction total")


def added_per_call(command: list[str], calls: int, rounds: int, env: dict[str, str]) -> tuple[list[float], float]:
    """Run ``command`` (a worker doing :func:`marked_rounds`) under callgrind: the instructions its mode adds
    per call on the calling thread, one figure per round, and the median instructions of a bare call."""
    with tempfile.TemporaryDirectory(prefix="payi-otel-callgrind-") as tmp:
        out = Path(tmp, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-before=getppid",
               f"--callgrind-out-file={out}", *command]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind worker failed:\n{done.stderr[-3000:]}")
        # Dump 1 is start-up and warm-up; then per round: switch + settle, the instrumented calls, switch +
        # settle, the bare calls. "-01" is the calling (main) thread.
        added, bare = [], []
        for r in range(rounds):
            on = _total(Path(f"{out}.{3 + 4 * r}-01"))
            off = _total(Path(f"{out}.{5 + 4 * r}-01"))
            added.append((on - off) / calls)
            bare.append(off / calls)
        return added, statistics.median(bare)


def summary(added: list[float]) -> str:
    return f"{statistics.median(added) / 1000:.1f}k [{min(added) / 1000:.1f}k .. {max(added) / 1000:.1f}k]"
