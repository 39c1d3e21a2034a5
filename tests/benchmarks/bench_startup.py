"""What payi-otel adds to a process's start under ``opentelemetry-instrument``: wall time and peak memory.

Run: .venv/bin/python tests/benchmarks/bench_startup.py [--runs N]

Each figure is the median over fresh processes, the three setups taking turns:

* baseline: ``opentelemetry-instrument`` with payi-otel's instrumentors disabled and no traces exporter;
* exporter: the same with ``OTEL_TRACES_EXPORTER=payi`` (offline file);
* ours: the exporter and the four instrumentors.

Apps: one that imports no provider SDK, and one that imports openai only, in an environment where openai,
anthropic, boto3 and google-genai are all installed (as this project's dev environment is). An SDK the app
does not import must cost it nothing. Target for the first app: the instrumentors (ours - exporter) import
no SDK module and add at most 50 ms and 5 MB (importing the four SDKs would add about 3 s and 110 MB here).
The exporter's own start (its modules, httpx) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSTRUMENTORS = ("payi_openai", "payi_anthropic", "payi_bedrock", "payi_google_genai")
SDKS = ("openai", "anthropic", "botocore", "google.genai")
APPS = {
    "no provider SDK imported": "import sys",
    "openai imported": "import sys, openai",
}
REPORT = "; print(','.join(m for m in {sdks!r} if m in sys.modules) or '-')"
TIME_TARGET_S = 0.050
RSS_TARGET_MB = 5.0
SETUPS = ("baseline", "exporter", "ours")


def launch(code: str, setup: str, spool: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, SDK modules the app ended with) of one fresh process."""
    # Bytecode is cached, as for an installed package (pip compiles it): a warm-up run of each setup writes it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_", "PYTHONDONTWRITEBYTECODE"))}
    env.update(OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none", PAYI_SPOOL_DIR=str(spool))
    env.update(OTEL_TRACES_EXPORTER="none" if setup == "baseline" else "payi", PAYI_OFFLINE_FILE=str(spool / "e.jsonl"))
    if setup != "ours":
        env.update(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=",".join(INSTRUMENTORS))
    launcher = str(Path(sys.executable).parent / "opentelemetry-instrument")
    start = time.perf_counter()
    process = subprocess.Popen(
        [launcher, sys.executable, "-c", code + REPORT.format(sdks=SDKS)], env=env, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    output = process.stdout.read().decode().strip()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the app exited with {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per figure (default 7)")
    args = parser.parse_args()
    print(f"interpreter: {sys.executable}; machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    missing = []
    with tempfile.TemporaryDirectory() as spool:
        for name, code in APPS.items():
            runs: dict[str, list[tuple[float, float, str]]] = {setup: [] for setup in SETUPS}
            for setup in SETUPS:
                launch(code, setup, Path(spool))  # the warm-up
            for i in range(args.runs):
                for setup in SETUPS[i % 3 :] + SETUPS[: i % 3]:
                    runs[setup].append(launch(code, setup, Path(spool)))
            wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
            rss = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
            modules = {k: sorted({r[2] for r in v}) for k, v in runs.items()}
            print(f"\n{name} ({args.runs} processes each, medians):")
            for setup in SETUPS:
                print(f"  {setup:9s} {wall[setup] * 1000:7.0f} ms, {rss[setup]:6.1f} MB; SDK modules: {modules[setup]}")
            print(f"  the exporter adds {(wall['exporter'] - wall['baseline']) * 1000:+.0f} ms, "
                  f"{rss['exporter'] - rss['baseline']:+.1f} MB")  # fmt: skip
            added_s, added_mb = wall["ours"] - wall["exporter"], rss["ours"] - rss["exporter"]
            line = f"  the instrumentors add {added_s * 1000:+.0f} ms, {added_mb:+.1f} MB"
            if name == "no provider SDK imported":
                met = added_s <= TIME_TARGET_S and added_mb <= RSS_TARGET_MB and modules["ours"] == ["-"]
                line += f" (target <= {TIME_TARGET_S * 1000:.0f} ms, {RSS_TARGET_MB:.0f} MB, no SDK imported: "
                line += "met)" if met else "MISSED)"
                if not met:
                    missing.append(name)
            print(line)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
