"""What every router shares: the service's parts, authentication, JSON answers, cursors and error docs."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Query, Request
from fastapi.responses import Response

from payi_otel import protocol as P
from payi_otel.service import models
from payi_otel.service.admin import AdminGate
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.errors import PayiApiError, invalid_api_key
from payi_otel.service.ingest import Ingestor
from payi_otel.service.ingest_results import iso_timestamp
from payi_otel.service.store import Application, Store, StoreError, new_id

API_KEY_HEADER = P.API_KEY
DEFAULT_PAGE = 25
MAX_PAGE = 100


@dataclass(slots=True)
class Service:
    """The parts of a running service the routes use."""

    store: Store
    ingestor: Ingestor
    committer: GroupCommitter
    clock: Callable[[], float] = time.time
    # (method, path template) -> {first field of the problem, or "*" for any: the code a body that fails
    # validation is answered with}
    validation_codes: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # who reads every application's data; None: only application keys (each its own application)
    gate: AdminGate | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def authenticate(self, request: Request) -> Application:
        return self.authenticate_key(request.headers.get(API_KEY_HEADER))

    def authenticate_key(self, key: str | None) -> Application:
        """The application of an ``xProxy-api-key`` value, or the 401 error."""
        if not key:
            raise invalid_api_key(API_KEY_HEADER, "is missing")
        app_ = self.store.authenticate(key)
        if app_ is None:
            raise invalid_api_key(API_KEY_HEADER)
        return app_

    def authenticate_for_write(self, key: str | None) -> tuple[Application, str | None]:
        """As :meth:`authenticate_key`, for a write that confirms the key in its own transaction: a key
        authenticated before is not read again here; its digest is returned with its application, to be
        confirmed (see :meth:`.store.apps.AppsStore.known_key`). None: authenticated now, from the database."""
        known = self.store.known_key(key) if key else None
        if known is not None:
            return known
        return self.authenticate_key(key), None

    def reader(self, request: Request) -> Application | None:
        """Whose data a request may read: None for an administrator (every application), else the
        application of its key (its own data only)."""
        if self.gate is not None and self.gate.is_admin(request):
            return None
        if self.gate is not None and not request.headers.get(API_KEY_HEADER):
            self.gate.require_admin(request)
        return self.authenticate(request)

    def require_admin(self, request: Request) -> None:
        if self.gate is None:
            raise PayiApiError(403, "admin_required", "this service has no admin access")
        self.gate.require_admin(request)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def api_error(exc: StoreError, status: int = 400) -> PayiApiError:
    """A store refusal as a Pay-i error (``*_not_found`` codes answer 404)."""
    return PayiApiError(404 if exc.code.endswith("_not_found") else status, exc.code, str(exc))


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for Pay-i error bodies with these statuses (401 is always possible)."""
    text = {
        400: "Invalid request; xproxy_error.code names the rule",
        401: "Missing or unknown xProxy-api-key (invalid_api_key)",
        403: "Not allowed on this object (system categories are read-only)",
        404: "No such object in this application (*_not_found)",
        413: "Body over the service's size limit (request_too_large)",
        415: "Body is not declared application/json (invalid_content_type)",
    }
    return {s: {"model": models.ApiError, "description": text[s]} for s in sorted({401, *statuses})}


def request_id() -> str:
    return new_id()


def iso(ms: int | None) -> str | None:
    return None if ms is None else iso_timestamp(ms)


# --- cursor pagination (opaque cursors: the sort key of the last item, base64url JSON) -----------
PageSize = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"Items per page (1-{MAX_PAGE}, default {DEFAULT_PAGE})")
Cursor = Query(None, description="The cursor of the previous page; omit for the first page")
SortAscending = Query(True, description="Oldest first (true, the default) or newest first")


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int, like: list[Any] | None = None) -> list[Any] | None:
    """The sort key a cursor holds; with ``like`` (a key of this list) its values must have the same
    types, so that a forged cursor cannot make the comparison fail."""
    if not cursor:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != arity
        or (like is not None and any(type(a) is not type(b) for a, b in zip(key, like, strict=True)))
    ):
        raise PayiApiError(400, "invalid_cursor", "cursor: not a cursor returned by this list (pass it unchanged)")
    return key


def page(items: list[dict[str, Any]], keys: list[list[Any]], size: int) -> dict[str, Any]:
    """A page body from up to ``size + 1`` fetched items (the extra one only says there is more)."""
    more = len(items) > size
    return {
        "request_id": request_id(),
        "items": items[:size],
        "cursor": encode_cursor(keys[size - 1]) if more else None,
        "has_more": more,
    }
