"""`payi-otel demo`: the whole product end to end on one machine.

Starts the local Pay-i-compatible service, runs an example application under
``opentelemetry-instrument`` with the Pay-i exporter (zero code changes in the app), waits for the
exporter to deliver, and prints the cost report. Without ``OPENAI_API_KEY`` the example is answered
from real recorded OpenAI responses; with it, the same example calls OpenAI.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from payi_otel.extras import install_hint, missing_extra

EXAMPLE = "openai_app.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _examples_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples"
        if (candidate / EXAMPLE).is_file():
            return candidate
    raise SystemExit(f"payi-otel demo: cannot find examples/{EXAMPLE}; run it from a checkout of payi-otel")


def _wait_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"payi-otel demo: the service exited with code {server.returncode}")
        try:
            if httpx.get(f"{base_url}/openapi.json", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"payi-otel demo: the service did not answer on {base_url} within {timeout:.0f}s")


DEMO_ENTRIES = ("service", "spool")  # all the demo writes in its data directory


def _empty_demo_dir(data_dir: Path) -> None:
    """``--fresh``: remove what an earlier demo wrote there, and only that. A directory holding anything
    else (the current directory, a home, a project) is refused rather than emptied."""
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise SystemExit(f"payi-otel demo: --data-dir {data_dir} is not a directory")
    foreign = sorted(p.name for p in data_dir.iterdir() if p.name not in DEMO_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SystemExit(
            f"payi-otel demo: --fresh empties only a directory the demo made (holding {' and '.join(DEMO_ENTRIES)});"
            f" {data_dir} also holds {shown}: choose another --data-dir"
        )
    for name in DEMO_ENTRIES:
        shutil.rmtree(data_dir / name, ignore_errors=True)


def _check_extras(replay: bool) -> None:
    """The demo runs the service and (without OPENAI_API_KEY) replays YAML cassettes: say which extras are missing
    before anything starts."""
    needed = [("service", "payi_otel.service.server")] + ([("replay", "yaml")] if replay else [])
    missing = []
    for extra, module in needed:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if missing_extra(exc) != extra:
                raise
            missing.append(extra)
    if missing:
        alternative = "; or set OPENAI_API_KEY to call OpenAI instead of replaying" if missing == ["replay"] else ""
        names = " and ".join(repr(m) for m in missing) + (" extras" if len(missing) > 1 else " extra")
        raise SystemExit(
            f"payi-otel demo: needs the {names} (the local service; PyYAML replays the recorded OpenAI responses):"
            f" {install_hint(','.join(missing))}{alternative}"
        )


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payi-otel demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("PAYI_OTEL_DEMO_DIR", ".payi-otel/demo"),
        help="where the demo keeps the service's database and the exporter's spool (default: .payi-otel/demo)",
    )
    parser.add_argument("--fresh", action="store_true", help="start from an empty data directory")
    args = parser.parse_args(argv)

    _check_extras(replay=not os.environ.get("OPENAI_API_KEY"))
    data_dir = Path(args.data_dir).resolve()
    if args.fresh:
        _empty_demo_dir(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    cli = _bin("payi-otel")

    print(f"==> starting the local Pay-i service on {base_url} (data in {data_dir})", flush=True)
    server = subprocess.Popen(
        [cli, "serve", "--port", str(port), "--data-dir", str(data_dir / "service")],
    )
    try:
        _wait_ready(base_url, server)
        key_file = data_dir / "service" / "default-api-key"
        api_key = key_file.read_text().strip()

        example = _examples_dir() / EXAMPLE
        mode = "OpenAI" if os.environ.get("OPENAI_API_KEY") else "recorded OpenAI responses"
        print(f"==> running {example.name} under opentelemetry-instrument ({mode})", flush=True)
        env = dict(os.environ)
        env.update(
            {
                "OTEL_SERVICE_NAME": "payi-otel-demo",
                "OTEL_TRACES_EXPORTER": "payi",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "PAYI_BASE_URL": base_url,
                "PAYI_API_KEY": api_key,
                "PAYI_SPOOL_DIR": str(data_dir / "spool"),
            }
        )
        app = subprocess.run([_bin("opentelemetry-instrument"), sys.executable, str(example)], env=env)
        if app.returncode != 0:
            print(f"payi-otel demo: the example exited with code {app.returncode}", file=sys.stderr)
            return app.returncode

        print("==> cost report (payi-otel report --by use_case,user)", flush=True)
        report = subprocess.run([cli, "report", "--data-dir", str(data_dir / "service"), "--by", "use_case,user"])
        if report.returncode != 0:
            return report.returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(dashboard_hint(cli, data_dir / "service"), flush=True)
    return 0


def dashboard_hint(cli: str, service_dir: Path) -> str:
    """How to see the demo's data in the dashboard: the command that serves it, then the URL (last)."""
    from payi_otel.cli import DEFAULT_HOST, DEFAULT_PORT

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    program = shown(Path(cli)) if os.sep in cli else cli
    command = f"{shlex.quote(program)} serve --data-dir {shlex.quote(shown(service_dir))}"
    return (
        "==> the dashboard of this data: start the service with\n"
        f"      {command}\n"
        f"    then open http://{DEFAULT_HOST}:{DEFAULT_PORT}/"
    )


if __name__ == "__main__":
    raise SystemExit(main())
