"""The ``payi-otel`` command: run the local service, manage its applications, print reports.

``apps`` and ``report`` work on the data directory directly (local administration), so they also
work while the service runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

from payi_otel.extras import install_hint, missing_extra
from payi_otel.safe_text import sanitize

if TYPE_CHECKING:
    from payi_otel.service.store import Store

from payi_otel import cli_limits

ENV_HOST = "PAYI_OTEL_HOST"
ENV_PORT = "PAYI_OTEL_PORT"
ENV_DATA_DIR = "PAYI_OTEL_DATA_DIR"
ENV_DATABASE_URL = "PAYI_OTEL_DATABASE_URL"
ENV_OTLP_GRPC_PORT = "PAYI_OTEL_OTLP_GRPC_PORT"
ENV_RELAY_HOST = "PAYI_OTEL_RELAY_HOST"
ENV_RELAY_PORT = "PAYI_OTEL_RELAY_PORT"
ENV_RELAY_GRPC_PORT = "PAYI_OTEL_RELAY_GRPC_PORT"
DEFAULT_RELAY_PORT = 4318
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3011
DEFAULT_DATA_DIR = ".payi-otel"
# Application and group names of the local service: its own rule (Pay-i documents none), chosen to
# look like the use case name rule so names stay safe in URLs, reports and shell commands.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UsageError(Exception):
    """Bad command-line or environment input; the message names the option and the rule."""


def _port(value: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise UsageError(f"{source} {value!r}: must be an integer port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{source} {value}: must be between 0 and 65535")
    return port


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def _data_dir(args: argparse.Namespace) -> str:
    return args.data_dir or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR


def _data_dir_source(args: argparse.Namespace) -> str:
    """How the data directory was chosen, as error messages name it."""
    if args.data_dir:
        return "--data-dir"
    return ENV_DATA_DIR if os.environ.get(ENV_DATA_DIR) else "--data-dir (default)"


def _database_url(args: argparse.Namespace) -> str | None:
    from payi_otel.service.store.connection import resolve_database_url

    return resolve_database_url(getattr(args, "database_url", None))


def _store_source(args: argparse.Namespace) -> str:
    """Where the store is, as error messages name it: the database URL (without password) or the data directory."""
    url = _database_url(args)
    if url is None:
        return f"{_data_dir_source(args)} {_data_dir(args)}"
    from payi_otel.service.store.postgres import display_url

    return f"{'--database-url' if getattr(args, 'database_url', None) else ENV_DATABASE_URL} {display_url(url)}"


def _open_store(args: argparse.Namespace) -> Store:
    """The existing store of the data directory (or database); never creates one (only `serve` does)."""
    from payi_otel.service.store import NoStoreError, Store, StoreError
    from payi_otel.service.store.connection import database_errors

    try:
        return Store(_data_dir(args), create=False, database_url=_database_url(args))
    except NoStoreError as exc:  # SQLite's message names the data directory already
        raise UsageError(str(exc) if _database_url(args) is None else f"{_store_source(args)}: {exc}") from None
    except StoreError as exc:
        raise UsageError(f"{_store_source(args)}: {exc}") from None
    except database_errors() as exc:
        raise UsageError(f"{_store_source(args)}: cannot open its store ({exc})") from None


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help=f"directory holding the service's SQLite data (env {ENV_DATA_DIR}, default ./{DEFAULT_DATA_DIR})",
    )
    p.add_argument(
        "--database-url",
        help=f"postgresql://... URL of a PostgreSQL database holding the data instead (env {ENV_DATABASE_URL})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payi-otel", description="Local Pay-i-compatible service and reports.")
    parser.add_argument("--version", action="version", version=f"payi-otel {metadata.version('payi-otel')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the local Pay-i-compatible service")
    serve.add_argument("--host", help=f"address to listen on (env {ENV_HOST}, default {DEFAULT_HOST})")
    serve.add_argument("--port", help=f"port to listen on (env {ENV_PORT}, default {DEFAULT_PORT})")
    serve.add_argument("--webhook-url", help="URL limit alerts are POSTed to (env PAYI_OTEL_WEBHOOK_URL)")
    serve.add_argument(
        "--otlp-grpc-port", help=f"also receive OTLP/gRPC traces on this port (env {ENV_OTLP_GRPC_PORT}; default: off)"
    )
    _add_data_dir(serve)

    apps = sub.add_parser("apps", help="manage applications and their API keys")
    apps_sub = apps.add_subparsers(dest="apps_command", required=True, metavar="ACTION")
    create = apps_sub.add_parser("create", help="create an application and print its API key")
    create.add_argument("name", type=_name)
    create.add_argument("--group", type=_name, default="default", help="group of the application (default: default)")
    _add_data_dir(create)
    lst = apps_sub.add_parser("list", help="list applications")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    _add_data_dir(lst)
    rotate = apps_sub.add_parser("rotate", help="replace one of an application's two keys and print the new key")
    rotate.add_argument("name", type=_name)
    rotate.add_argument("--key", type=int, choices=(1, 2), required=True, help="which key to replace")
    _add_data_dir(rotate)
    dk = apps_sub.add_parser("default-key", help="print the default application's API key")
    _add_data_dir(dk)
    admin_token = sub.add_parser(
        "admin-token", help="print the admin token (the dashboard and reports API ask for it off loopback)"
    )
    _add_data_dir(admin_token)

    try:
        from payi_otel.service.reports import DIMENSIONS, FORMATS
        from payi_otel.service.store import STATUSES
    except ModuleNotFoundError as exc:  # without the service extra: `report` says which extra when it runs
        if missing_extra(exc) is None:
            raise
        DIMENSIONS, FORMATS, STATUSES = (), None, None  # type: ignore[assignment]

    report = sub.add_parser("report", help="print cost, requests, tokens, failures and latency")
    report.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="DIM[,DIM]",
        help=f"group by any of: {', '.join(DIMENSIONS)} (repeatable or comma-separated)",
    )
    report.add_argument("--since", help="start: ISO date/time or relative age (30m, 24h, 7d, 2w)")
    report.add_argument("--until", help="end (exclusive): ISO date/time or relative age")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--app", metavar="NAME", help="only this application's requests")
    report.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="DIM=VALUE",
        help="only requests whose DIM (any --by dimension) equals VALUE (repeatable; all must hold)",
    )
    report.add_argument("--status", choices=STATUSES, help="only failed, succeeded, unpriced or priced requests")
    _add_data_dir(report)

    cli_limits.add_parser(sub, _add_data_dir)
    relay = sub.add_parser(
        "relay", help="receive OTLP traces and forward Pay-i events to PAYI_BASE_URL through a durable spool"
    )
    relay.add_argument("--host", help=f"address to listen on (env {ENV_RELAY_HOST}, default {DEFAULT_HOST})")
    relay.add_argument("--port", help=f"OTLP/HTTP port (env {ENV_RELAY_PORT}, default {DEFAULT_RELAY_PORT})")
    relay.add_argument(
        "--otlp-grpc-port", help=f"also receive OTLP/gRPC on this port (env {ENV_RELAY_GRPC_PORT}; default: off)"
    )

    from payi_otel import cli_ingest

    cli_ingest.add_parser(sub)

    sub.add_parser("demo", help="run the end-to-end demo (its own options follow)", add_help=False)
    return parser


def _port_option(value: str | None, option: str, env: str, default: int | None) -> int | None:
    if value is not None:
        return _port(value, option)
    if os.environ.get(env):
        return _port(os.environ[env], env)
    return default


def _grpc_port(args: argparse.Namespace, env: str = ENV_OTLP_GRPC_PORT) -> int | None:
    return _port_option(args.otlp_grpc_port, "--otlp-grpc-port", env, None)


def _relay(args: argparse.Namespace) -> int:
    from payi_otel.relay import hold_seconds, run_relay

    host = args.host or os.environ.get(ENV_RELAY_HOST) or DEFAULT_HOST
    port = _port_option(args.port, "--port", ENV_RELAY_PORT, DEFAULT_RELAY_PORT)
    assert port is not None
    try:
        hold_s = hold_seconds()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_relay(host, port, _grpc_port(args, ENV_RELAY_GRPC_PORT), hold_s)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from payi_otel.service.proxy.upstreams import ServiceConfigError
    from payi_otel.service.server import BindError, serve
    from payi_otel.service.store import StoreError
    from payi_otel.service.store.connection import database_errors

    host_source = "--host" if args.host else (ENV_HOST if os.environ.get(ENV_HOST) else "--host (default)")
    host = args.host or os.environ.get(ENV_HOST) or DEFAULT_HOST
    if args.port is not None:
        port, port_source = _port(args.port, "--port"), "--port"
    elif os.environ.get(ENV_PORT):
        port, port_source = _port(os.environ[ENV_PORT], ENV_PORT), ENV_PORT
    else:
        port, port_source = DEFAULT_PORT, "--port (default)"
    try:
        serve(
            _data_dir(args),
            host=host,
            port=port,
            webhook_url=args.webhook_url,
            otlp_grpc_port=_grpc_port(args),
            database_url=_database_url(args),
        )
    except BindError as exc:
        where = f"{host_source} {host!r}" if exc.option == "host" else f"{port_source} {port}"
        raise UsageError(f"{where}: {exc}") from None
    except ServiceConfigError as exc:
        raise UsageError(str(exc)) from None
    except StoreError as exc:
        raise UsageError(f"{_store_source(args)}: {exc}") from None
    except database_errors() as exc:
        raise UsageError(f"{_store_source(args)}: cannot hold the service's data ({exc})") from None
    return 0


def _apps(args: argparse.Namespace) -> int:
    from payi_otel.service.firstrun import default_key_path, read_default_key, remember_rotated_key
    from payi_otel.service.store import StoreError

    store = _open_store(args)
    try:
        if args.apps_command == "create":
            app, key = store.create_application(args.name, args.group)
            print(key)
            print(
                f"created application {app.name!r} in group {app.group!r}; the key is shown only once", file=sys.stderr
            )
        elif args.apps_command == "list":
            apps = store.applications()
            if args.format == "json":
                print(json.dumps(apps, indent=2))
            else:
                print(f"{'application':<24} {'group':<16} {'requests':>9}  keys")
                for a in apps:
                    ks = ", ".join(f"{k['slot']}:{k['prefix']}" for k in a["keys"]) or "-"
                    print(f"{sanitize(a['name']):<24} {sanitize(a['group']):<16} {a['requests']:>9}  {ks}")
        elif args.apps_command == "rotate":
            slots = {k["slot"] for a in store.applications() if a["name"] == args.name for k in a["keys"]}
            key = store.rotate_key(args.name, args.key)
            remember_rotated_key(store.data_dir, args.name, args.key, key)
            print(key)
            if args.key in slots:
                print(f"key {args.key} of {args.name!r} replaced; the old key no longer works", file=sys.stderr)
            else:
                print(
                    f"key {args.key} of {args.name!r} issued (the slot was empty; no key stopped working)",
                    file=sys.stderr,
                )
        elif args.apps_command == "default-key":
            default_key = read_default_key(store.data_dir)
            if default_key is None:
                raise UsageError(f"no default key file at {default_key_path(store.data_dir)}")
            print(default_key)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    return 0


def _admin_token(args: argparse.Namespace) -> int:
    from payi_otel.service.admin import ADMIN_TOKEN_ENV, admin_token_path, read_admin_token

    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip() or read_admin_token(_data_dir(args))
    if token is None:
        path = admin_token_path(_data_dir(args))
        raise UsageError(
            f"{_data_dir_source(args)} {_data_dir(args)}: no admin token at {path}"
            " (payi-otel serve creates it at its first start)"
        )
    print(token)
    return 0


def _report(args: argparse.Namespace) -> int:
    from payi_otel.service.report_render import render
    from payi_otel.service.reports import (
        ReportError,
        build_report,
        check_query,
        parse_dimensions,
        parse_filters,
        parse_time,
    )
    from payi_otel.service.store import ReportQuery

    try:
        now = datetime.now(UTC)
        dims = parse_dimensions(args.by)
        query = ReportQuery(
            since_ms=parse_time(args.since, "--since", now) if args.since else None,
            until_ms=parse_time(args.until, "--until", now) if args.until else None,
            application=args.app,
            filters=parse_filters(args.where),
            status=args.status,
        )
        store = _open_store(args)
        try:
            check_query(store, query)
            print(render(build_report(store, dims, query), args.format, sys.stdout.isatty()))
        finally:
            store.close()
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from payi_otel.cli_ingest import IngestError, run

    try:
        return run(args)
    except IngestError as exc:
        raise UsageError(str(exc)) from None


def _demo(argv: list[str]) -> int:
    from payi_otel.demo import main as demo_main  # imported only when asked for

    return demo_main(argv) or 0


def _limits(args: argparse.Namespace) -> int:
    return cli_limits.run(args, lambda: _open_store(args), UsageError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:  # a command of an extra that is not installed
        extra = missing_extra(exc)
        if extra is None:
            raise
        command = argv[0] if argv else ""
        print(
            f"payi-otel {command}: error: needs the '{extra}' extra (module {exc.name!r} is not installed):"
            f" {install_hint(extra)}",
            file=sys.stderr,
        )
        return 2


def _main(argv: list[str]) -> int:
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])  # the demo parses its own options
    args = _parser().parse_args(argv)
    handlers = {
        "serve": _serve,
        "apps": _apps,
        "admin-token": _admin_token,
        "report": _report,
        "limits": _limits,
        "relay": _relay,
        "ingest": _ingest,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"payi-otel {args.command}: error: {sanitize(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
