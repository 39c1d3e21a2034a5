"""Benchmark of `payi-otel ingest`: events/s backfilled from a JSON Lines file into the local service.

The service runs as a separate `payi-otel serve` process on 127.0.0.1; the ingest command runs as its own
process, as a user runs it (progress bar off).

    .venv/bin/python tests/benchmarks/bench_backfill.py               # 100,000 lines
    .venv/bin/python tests/benchmarks/bench_backfill.py --lines 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="payi-otel-backfill-") as tmp:
        data = Path(tmp) / "events.jsonl"
        start = datetime.now(UTC) - timedelta(days=20)
        with open(data, "w") as f:
            for n in range(args.lines):
                f.write(
                    json.dumps(
                        {
                            "category": "system.openai",
                            "resource": "gpt-4o-mini",
                            "user_id": f"user-{n % 50}",
                            "use_case_name": "backfill",
                            "units": {"text": {"input": 100 + n % 10, "output": 20}},
                            "event_timestamp": (start + timedelta(seconds=n * 10)).isoformat(),
                        }
                    )
                    + "\n"
                )
        server = subprocess.Popen(
            [sys.executable, "-m", "payi_otel.cli", "serve", "--port", "0", "--data-dir", str(Path(tmp) / "svc")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            base_url = line.split("listening on ")[1].strip()
            key = (Path(tmp) / "svc" / "default-api-key").read_text().strip()
            env = {**os.environ, "PAYI_BASE_URL": base_url, "PAYI_API_KEY": key}
            began = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "payi_otel.cli",
                    "ingest",
                    "--no-progress",
                    "--batch-size",
                    str(args.batch_size),
                    str(data),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            elapsed = time.perf_counter() - began
            print(done.stderr.strip())
            print(
                f"backfill: {args.lines} lines in {elapsed:.2f} s = {args.lines / elapsed:,.0f} events/s "
                f"(batch {args.batch_size}, process start-up included)"
            )
            return done.returncode
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
