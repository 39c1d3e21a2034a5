"""Who may read every application's data: the admin token, and the open loopback service.

The admin token is created at first run beside the default key (``admin-token`` in the data
directory, mode 0600), or given to every instance through ``$PAYI_OTEL_ADMIN_TOKEN`` (several
instances over one database). It is sent as ``Authorization: Bearer <token>``.

A service that listens on a loopback address only is *open*: a request without credentials there is
an administrator's (the machine's own user). Its ``Host`` header must then name a loopback host too,
so that a web page whose domain is made to resolve to 127.0.0.1 (DNS rebinding) cannot read it, and a
request a browser sends from another site's page (its ``Origin``) is not the administrator's either.
Listening anywhere else, the reports API, the dashboard's data and admin actions need the token.
An application key always reads its own application's data only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request

from payi_otel import protocol as P
from payi_otel.service.errors import PayiApiError

ADMIN_TOKEN_FILE = "admin-token"
ADMIN_TOKEN_ENV = "PAYI_OTEL_ADMIN_TOKEN"
TOKEN_PREFIX = "payi-admin-"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def admin_token_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / ADMIN_TOKEN_FILE


def ensure_admin_token(data_dir: str | os.PathLike[str]) -> str:
    """The admin token: ``$PAYI_OTEL_ADMIN_TOKEN``, else the data directory's (created at first run)."""
    from_env = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    path = admin_token_path(data_dir)
    existing = read_admin_token(data_dir)
    if existing:
        return existing
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def read_admin_token(data_dir: str | os.PathLike[str]) -> str | None:
    try:
        return admin_token_path(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def _names_loopback(name: str) -> bool:
    """Whether a host name or address literal is a loopback one, without asking DNS."""
    name = name.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` (an address or a name) is reachable from this machine only."""
    if _names_loopback(host):
        return True
    try:
        infos = socket.getaddrinfo(host.strip().strip("[]"), None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def _host_is_loopback(request: Request) -> bool:
    """Whether the request's Host header names a loopback host (``localhost:3011``, ``[::1]:3011``, ...)."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return _names_loopback(name)


def _same_origin(request: Request) -> bool:
    """False for a request a browser sent from another site's page (its Origin is not this service): such a
    page must not act as the machine's user (a key rotation needs no body, so it needs no CORS preflight)."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


@dataclass(frozen=True, slots=True)
class AdminGate:
    """Decides whether a request reads every application (admin) or one (its application key)."""

    token: str
    open_on_loopback: bool

    def _bearer(self, request: Request) -> str | None:
        value = request.headers.get("authorization")
        if value is None:
            return None
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise PayiApiError(401, "invalid_admin_token", "Authorization: expected 'Bearer <admin token>'")
        return credentials.strip()

    def is_admin(self, request: Request) -> bool:
        """True for a valid admin token, or no credentials at all on an open loopback service.

        A wrong token is refused (401) rather than read as no token.
        """
        token = self._bearer(request)
        if token is not None:
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                raise PayiApiError(401, "invalid_admin_token", "Authorization: not this service's admin token")
            return True
        if request.headers.get(P.API_KEY):
            return False
        return self.open_on_loopback and _host_is_loopback(request) and _same_origin(request)

    def require_admin(self, request: Request) -> None:
        if self.is_admin(request):
            return
        if request.headers.get(P.API_KEY):
            raise PayiApiError(403, "admin_required", "an application key cannot do this: send the admin token instead")
        raise PayiApiError(
            401,
            "admin_token_required",
            "Authorization: send 'Bearer <admin token>' (payi-otel admin-token prints it)",
        )
