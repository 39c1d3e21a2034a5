"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary directory, start it
on 127.0.0.1 on a free port as an unprivileged user, stop it and delete it at the end.

    python tests/postgres_server.py [--fast] -- COMMAND ...

runs COMMAND with ``PAYI_OTEL_TEST_DATABASE_URL`` (and ``PAYI_OTEL_BENCH_DATABASE_URL``) set to the
server's URL and exits with its status. ``--fast`` turns off fsync (test data need not survive a power
cut; benchmarks run without it). The server binaries come from Debian's ``postgresql`` package: when
they are missing and we are root, it is installed with apt-get.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

USER = "postgres"  # the unprivileged user Debian's package creates; the server refuses to run as root


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The directory of initdb/pg_ctl, installing Debian's postgresql package if needed."""
    found = _bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql) and we are not root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = _bin_dir()
    if found is None:
        raise SystemExit("apt-get installed postgresql, but no initdb was found under /usr/lib/postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", USER, "--", *argv]


@contextlib.contextmanager
def postgres_server(fast: bool = False) -> Iterator[str]:
    """A running server; yields its URL (database ``postgres``, user ``payi``, trust auth on loopback)."""
    bin_dir = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="payi-otel-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam(USER)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    options = [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"port={port}",
        "-c",
        f"unix_socket_directories={root}",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=128MB",
    ]
    if fast:
        options += ["-c", "fsync=off", "-c", "full_page_writes=off"]
    try:
        subprocess.run(
            _as_user(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "payi",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            _as_user(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(root / "log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    " ".join(options),
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            yield f"postgresql://payi@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                check=False,
                stdout=subprocess.DEVNULL,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="fsync off (tests)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run, after --")
    with postgres_server(fast=args.fast) as url:
        env = {**os.environ, "PAYI_OTEL_TEST_DATABASE_URL": url, "PAYI_OTEL_BENCH_DATABASE_URL": url}
        started = time.monotonic()
        code = subprocess.run(command, env=env, check=False).returncode
        print(f"(PostgreSQL at {url}, {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
