"""Run every benchmark in this folder, one after the other, and print their figures (`make bench`).

    python tests/benchmarks/run_all.py [--full]

Without ``--full`` the service benchmark runs its quick variant (its million-event memory check
takes several minutes); each script can also be run on its own with its own options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run the service benchmark over a million events")
    args = parser.parse_args()
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        command = [sys.executable, str(script)]
        if script.name == "bench_service.py" and not args.full:
            command.append("--quick")
        print(f"\n===== {script.name} =====", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
