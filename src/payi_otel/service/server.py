"""Running the local service with uvicorn: in the foreground (``payi-otel serve``) or in a thread.

uvicorn stops on SIGINT/SIGTERM by closing the listening socket, finishing in-flight requests and
then running the app's shutdown; every acknowledged ingest was committed before its response, so
nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Self

import uvicorn

from payi_otel.service.admin import ADMIN_TOKEN_ENV, admin_token_path, is_loopback
from payi_otel.service.app import create_app
from payi_otel.service.firstrun import default_key_path, read_default_key

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3011


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


class _Server(uvicorn.Server):
    """uvicorn server that reports its bound address once it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.base_url: str | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.base_url = f"http://{host}:{port}"
            if self._on_started is not None:
                self._on_started(self.base_url)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """SIGINT/SIGTERM: graceful stop (a second one forces it); the process then exits normally."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class BindError(Exception):
    """The service cannot listen where it was asked to; ``option`` is "host" or "port"."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or :class:`BindError` saying why not in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BindError("host", f"not an address or a host name this machine can resolve ({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError("port", f"already in use on {host} (another program listens there)") from None
        if exc.errno == errno.EACCES:
            raise BindError("port", "permission denied (ports below 1024 need privileges)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BindError("host", "not an address of this machine") from None
        raise BindError("host", f"cannot listen there on port {port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    data_dir: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    webhook_url: str | None = None,
    otlp_grpc_port: int | None = None,
    database_url: str | None = None,
) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM (with OTLP/gRPC on ``otlp_grpc_port`` if given).

    Raises :class:`BindError` when it cannot listen, and the store's ``StoreError`` when the data
    directory cannot hold a store; nothing is created before both are known to be fine.
    """
    data = Path(data_dir).resolve()
    sock = bind(host, port)
    loopback = is_loopback(host)
    try:
        app = create_app(
            data,
            webhook_url=webhook_url,
            otlp_grpc_port=otlp_grpc_port,
            otlp_grpc_host=host,
            loopback_only=loopback,
            database_url=database_url,
        )
    except BaseException:
        sock.close()
        raise
    key_file = default_key_path(data)

    def announce(base_url: str) -> None:
        print(f"payi-otel service listening on {base_url}", flush=True)
        print(f"  data: {app.state.store.location}", flush=True)
        if key_file.exists():
            print(f"  default application key: {key_file} (payi-otel apps default-key)", flush=True)
        print(f"  point the plugin at it: PAYI_BASE_URL={base_url}", flush=True)
        print(f"  OTLP/HTTP traces: {base_url}/v1/traces", flush=True)
        if app.state.otlp_grpc_port is not None:
            print(f"  OTLP/gRPC traces: {host}:{app.state.otlp_grpc_port}", flush=True)
        print(f"  dashboard: {base_url}/", flush=True)
        if not loopback:
            where = ADMIN_TOKEN_ENV if os.environ.get(ADMIN_TOKEN_ENV) else admin_token_path(data)
            print(
                f"  not on loopback: the dashboard and the reports API ask for the admin token ({where};"
                " payi-otel admin-token prints it)",
                flush=True,
            )

    server = _Server(_config(app, host, port), on_started=announce)
    server.run(sockets=[sock])
    print("payi-otel service stopped", file=sys.stderr, flush=True)


class AppThread:
    """An ASGI app served by uvicorn on a background thread (tests, demos). Use as a context manager;
    ``base_url`` is set once it listens."""

    def __init__(self, app: Any, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.app = app
        self._server = _Server(_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="payi-otel-service", daemon=True)
        self.base_url: str = ""

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self._server.base_url is None:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the payi-otel service did not start")
            time.sleep(0.005)
        self.base_url = self._server.base_url
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServiceThread(AppThread):
    """The service on a background thread (tests, demos). Use as a context manager.

    ``base_url``, ``api_key`` (the default application's key) and ``otlp_grpc_port`` (with the
    ``otlp_grpc_port`` app option) are set once it listens.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = 0, **app_options: Any
    ) -> None:
        """``app_options`` go to :func:`create_app` (``clock``, ``webhook_url``, ``reset_check_interval``,
        ``otlp_grpc_port``)."""
        self.data_dir = Path(data_dir)
        app_options.setdefault("loopback_only", is_loopback(host))
        super().__init__(create_app(self.data_dir, **app_options), host, port)
        self.api_key: str = read_default_key(self.data_dir) or ""
        self.otlp_grpc_port: int | None = None

    def start(self, timeout: float = 10.0) -> Self:
        super().start(timeout)
        self.otlp_grpc_port = self.app.state.otlp_grpc_port
        return self
