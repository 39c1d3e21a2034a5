"""Worker processes of the overhead benchmarks, and the throwaway venv their competing instrumentations live in.

Every (mode, round) of an overhead benchmark runs in a fresh worker process: ``script --worker ...`` under one
interpreter, which prints its result as JSON on its last output line. The competing instrumentations (the
official OpenTelemetry ones, OpenLLMetry, OpenInference) register entry points and pin packages of their own, so
they must not leak into the project's environment: they are installed into a throwaway venv that sees the
project's packages through a ``.pth`` file, and every mode of a benchmark then runs under that venv's interpreter,
so all of them share one set of packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from measure import own_venv

# mode -> (the requirements to install, the module whose import proves them installed)
Others = Mapping[str, tuple[tuple[str, ...], str]]


def throwaway_venv(venv: Path, others: Others) -> tuple[str, set[str]]:
    """The interpreter to run every mode under, and the competing modes of ``others`` it can run.

    ``venv`` is suffixed per project environment (:func:`measure.own_venv`), created when missing, and its
    ``.pth`` rewritten on every run (a reused venv must see this environment's packages). A mode whose
    requirements cannot be installed is skipped with a message; without a venv every mode of ``others`` is."""
    venv = own_venv(venv)
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            print(f"creating throwaway venv {venv} for {', '.join(others)} (kept out of the project environment)")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        venv_site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        site = sysconfig.get_paths()["purelib"]
        Path(venv_site, "payi_otel_project.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"{', '.join(others)}: SKIPPED, no throwaway venv: {exc}")
        return sys.executable, set()
    available = set()
    for mode, (requirements, module) in others.items():
        check = [str(python), "-c", f"import {module}, payi_otel"]
        if subprocess.run(check, capture_output=True).returncode != 0:
            out = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
                print(f"{mode}: SKIPPED, could not install {' '.join(requirements)}: {out.stderr.strip()[-500:]}")
                continue
        available.add(mode)
    return str(python), available


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of every worker process, the same for every mode: the SDK on, a fixed hash seed, content
    capture off, and none of the user's Pay-i settings."""
    env = {**os.environ, "OTEL_SDK_DISABLED": "false", "PYTHONHASHSEED": "0", "TRACELOOP_TRACE_CONTENT": "false"}
    for name in list(env):
        if name.startswith(("OTEL_INSTRUMENTATION_GENAI", "PAYI_")):
            env.pop(name)
    return {**env, **extra}


def run_worker(python: str, script: str, args: list[str], **extra_env: str) -> dict:
    """``script args`` in a fresh process of ``python``; its last output line, as JSON."""
    out = subprocess.run([python, script, *args], capture_output=True, text=True, env=worker_env(**extra_env))
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
