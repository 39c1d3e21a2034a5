"""The ASGI app of the local Pay-i-compatible service: assembles the routers, error bodies and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from payi_otel.service import models
from payi_otel.service.admin import AdminGate, ensure_admin_token
from payi_otel.service.alerts import WEBHOOK_ENV, AlertDeliverer, run_scheduled_resets
from payi_otel.service.body_limit import BodyLimit, max_body_bytes_from_env
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.errors import PayiApiError, error_from_details
from payi_otel.service.firstrun import ensure_default_application
from payi_otel.service.ingest import Ingestor
from payi_otel.service.otlp import ServiceOtlpSink
from payi_otel.service.otlp_grpc import grpc_receiver
from payi_otel.service.pricing import Pricer
from payi_otel.service.proxy.forward import Proxy
from payi_otel.service.proxy.upstreams import ServiceConfigError, Upstreams
from payi_otel.service.routes import (
    admin,
    categories,
    dashboard,
    ingest,
    limits,
    proxy,
    reports,
    requests,
    reservations,
    use_cases,
)
from payi_otel.service.routes.common import API_KEY_HEADER, Service, json_response
from payi_otel.service.routes.otlp import otlp_router
from payi_otel.service.routes.reservations import INGEST_BLOCK_LIMITS_ENV
from payi_otel.service.store import Store
from payi_otel.settings import parse_bool

log = logging.getLogger("payi_otel.service")

DOCS_ASSETS = "/docs/assets"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(
    data_dir: str | os.PathLike[str],
    *,
    clock: Callable[[], float] = time.time,
    webhook_url: str | None = None,
    reset_check_interval: float = 1.0,
    max_body_bytes: int | None = None,
    otlp_grpc_port: int | None = None,
    otlp_grpc_host: str = "127.0.0.1",
    loopback_only: bool = False,
    database_url: str | None = None,
    upstreams: Upstreams | None = None,
    ingest_block_limits: bool | None = None,
) -> FastAPI:
    """The service over the SQLite store in ``data_dir`` (created, with a default application, if new),
    or over the PostgreSQL database of ``database_url`` (default: ``$PAYI_OTEL_DATABASE_URL``).

    With ``otlp_grpc_port`` (0: any free port) it also receives OTLP/gRPC there; the bound port is
    ``app.state.otlp_grpc_port`` once the app has started.

    ``clock`` (seconds since the epoch) decides when scheduled limit resets are due;
    ``webhook_url`` (default: ``$PAYI_OTEL_WEBHOOK_URL``) receives limit alerts; request bodies
    over ``max_body_bytes`` (default: ``$PAYI_OTEL_MAX_BODY_BYTES`` or 16 MiB) are refused with 413.
    ``loopback_only``: the service listens on a loopback address only, so requests without credentials
    may read every application's data and act as administrator (see :mod:`payi_otel.service.admin`).
    The proxy forwards to ``upstreams`` (default: from ``$PAYI_OTEL_UPSTREAM_*``). ``ingest_block_limits``
    (default ``$PAYI_OTEL_INGEST_BLOCK_LIMITS``, off as in Pay-i) lets ingest count spend in block limits and
    enables ``POST /api/v1/reservations``.
    """
    body_limit = max_body_bytes_from_env() if max_body_bytes is None else max_body_bytes
    upstreams = upstreams or Upstreams()  # settings are checked before anything is created
    if ingest_block_limits is None:
        ingest_block_limits = parse_bool(
            os.environ.get(INGEST_BLOCK_LIMITS_ENV) or "false", INGEST_BLOCK_LIMITS_ENV, ServiceConfigError
        )
    store = Store(data_dir, database_url=database_url)
    ensure_default_application(store)
    gate = AdminGate(ensure_admin_token(store.data_dir), loopback_only)
    store.start_background_checkpoints()
    svc = Service(
        store,
        Ingestor(store, Pricer(), clock, block_limits=ingest_block_limits),
        GroupCommitter(store),
        clock,
        gate=gate,
    )
    deliverer = AlertDeliverer(store, webhook_url or os.environ.get(WEBHOOK_ENV) or None, svc.committer.run)
    store.alert_listener = deliverer.wake
    otlp_sink = ServiceOtlpSink(store, svc.ingestor, svc.committer)
    provider_proxy = Proxy(svc, upstreams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What start-up loaded (price data, schemas, routes) lives as long as the process: keep it
        # out of the garbage collector's full passes, which would otherwise walk it all, holding
        # the GIL (and so every request) for tens of milliseconds each time a large body is parsed.
        gc.collect()
        gc.freeze()
        # The event loop shares the GIL with the writer and parser threads: hand it over every
        # 0.5 ms instead of 5 ms, so a request waiting on the loop is not held up behind a write.
        sys.setswitchinterval(0.0005)
        # the gRPC receiver stops before the store closes
        async with service_tasks(), grpc_receiver(app, otlp_sink, otlp_grpc_host, otlp_grpc_port):
            yield

    @asynccontextmanager
    async def service_tasks() -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(deliverer.run(), name="payi-otel-alerts"),
            asyncio.create_task(
                run_scheduled_resets(
                    lambda: svc.committer.run(lambda: store.apply_due_resets(svc.now_ms())), reset_check_interval
                ),
                name="payi-otel-resets",
            ),
        ]
        yield
        await provider_proxy.aclose()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        svc.committer.close()
        store.close()

    app = FastAPI(
        title="payi-otel local service",
        version="1",
        description="A local, Pay-i-compatible API over SQLite or PostgreSQL: ingest, requests, limits, use cases, "
        f"categories, resources and reports. Every /api/v1 call is authenticated with the `{API_KEY_HEADER}` header "
        "(an application key). "
        "Every error answers Pay-i's body `{statusCode, message, xproxy_error: {code, message}}`.",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no asset comes from the internet
        redoc_url=None,
    )
    app.state.store = store
    app.state.service = svc
    app.add_middleware(ingest.IngestFastPath, svc=svc)  # inside the body limit (added after it: outside)
    app.add_middleware(proxy.ProxyFastPath, proxy=provider_proxy)  # a proxied call is matched first
    app.add_middleware(BodyLimit, limit=body_limit)

    @app.exception_handler(PayiApiError)
    async def _payi_error(request: Request, exc: PayiApiError) -> Response:
        return json_response(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        try:  # FastAPI validates bodies before the handler runs: a bad key still answers 401 first
            if request.url.path.startswith(admin.PREFIX):
                svc.require_admin(request)
            elif request.url.path.startswith(reports.PREFIX):
                svc.reader(request)
            else:
                svc.authenticate(request)
        except PayiApiError as auth:
            return json_response(auth.body(), auth.status)
        first = dict(exc.errors()[0])
        first["loc"] = tuple(p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
        error = error_from_details(first)
        route = request.scope.get("route")
        codes = svc.validation_codes.get((request.method, getattr(route, "path", ""))) or {}
        code = codes.get(str(first["loc"][0]) if first["loc"] else "*") or codes.get("*")
        if code is not None:
            error.code = code
        return json_response(error.body(), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "request_processing_error")
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        body = PayiApiError(exc.status_code, code, message.get(exc.status_code, str(exc.detail))).body()
        headers = exc.headers
        if exc.status_code == 405:  # Allow: every documented method at this path, not just the first route's
            allowed = {
                method.upper()
                for template, operations in app.openapi()["paths"].items()
                if compile_path(template)[0].match(request.url.path)
                for method in operations
            }
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return json_response(body, exc.status_code, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_response(PayiApiError(500, "unexpected_error", "unexpected error; see the service log").body(), 500)

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # the proxy's routes first: a proxied call (latency-sensitive) is matched before every other route
    app.include_router(proxy.router(provider_proxy))
    for area in (ingest, requests, limits, use_cases, categories, reports, admin):
        app.include_router(area.router(svc))
        svc.validation_codes.update(getattr(area, "VALIDATION_CODES", {}))
    app.include_router(otlp_router(otlp_sink, max_body_bytes=body_limit))
    app.include_router(reservations.router(svc, ingest_block_limits))
    dashboard.mount(app)

    _default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = _default_openapi()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in (models.IngestRequest, models.BulkIngestRequest):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            "AdminToken": {"type": "http", "scheme": "bearer", "description": "payi-otel admin-token prints it"},
        }
        # on a loopback service, the reports and admin APIs also answer requests without credentials
        anyone: list[dict[str, list[str]]] = [{}] if loopback_only else []
        for path, ops in schema["paths"].items():
            if path.startswith(admin.PREFIX):
                security = [{"AdminToken": []}, *anyone]
            elif path.startswith(reports.PREFIX):
                security = [{"ApiKey": []}, {"AdminToken": []}, *anyone]
            else:
                security = [{"ApiKey": []}]
            if path.startswith(("/api/", "/v1/")):
                for op in ops.values():
                    op["security"] = security
                    # FastAPI documents its own 422 body; this service answers validation errors with 400
                    op.get("responses", {}).pop("422", None)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
