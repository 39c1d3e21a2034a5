"""Proxy mode: instrumented provider calls go through a Pay-i proxy (Pay-i's, or the local service's).

On with ``instrument(proxy=True)`` or ``PAYI_PROXY=true``, for a block of code with
``track_context(proxy=True)`` (``proxy=False`` turns it off there). A call in proxy mode:

* goes to ``{PAYI_BASE_URL}/api/v1/proxy/<provider>/<the provider path>`` (the provider key stays in
  its usual header), with ``xProxy-api-key`` and ``xProxy-Provider-BaseUri`` (the client's own
  endpoint, which Azure needs);
* carries its business context as ``xProxy-*`` headers, properties as Base64 of compact JSON, as
  Pay-i's proxy takes them;
* still makes its span, marked ``payi.proxied``, but no ingest event: the proxy stores the call.

The route is changed where the provider SDK builds the request (see
:mod:`payi_otel.instrumentation._proxy_route`), so every client of an instrumented SDK follows it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payi_otel import fastcontext
from payi_otel import protocol as P
from payi_otel.context import PROXY_KEY, BusinessContext, call_context
from payi_otel.settings import parse_bool

logger = logging.getLogger(__name__)

ENV_PROXY = "PAYI_PROXY"
DEFAULT_BASE_URL = "https://api.pay-i.com"
# Internal header of a request the SDK is building: where the proxy route goes. It is taken off
# (and the URL changed) before the request leaves the process.
ROUTE_HEADER = "x-payi-otel-proxy-route"
PROVIDER_BASE_URI = "xProxy-Provider-BaseUri"

_ATTRIBUTION = tuple((f.name, f.header, f.kind) for f in P.CONTEXT_FIELDS if f.role in (P.ATTRIBUTION, P.PRICE_AS))
_PROPERTIES = tuple((f.name, f.header) for f in P.CONTEXT_FIELDS if f.role == P.PROPERTIES)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    enabled: bool  # the default outside any track_context(proxy=...)
    base_url: str
    api_key: str | None


_SETTINGS: ProxySettings | None = None


def configure(enabled: bool | None, base_url: str | None = None, api_key: str | None = None) -> ProxySettings:
    """Set proxy mode's default (``None``: ``$PAYI_PROXY``, default off) and where the proxy is
    (default ``$PAYI_BASE_URL`` / ``$PAYI_API_KEY``). A bad ``PAYI_PROXY`` is logged and ignored."""
    global _SETTINGS
    if enabled is None:
        raw = os.environ.get(ENV_PROXY, "").strip()
        try:
            enabled = parse_bool(raw, ENV_PROXY) if raw else False
        except ValueError as exc:
            logger.error("payi-otel: %s; proxy mode stays off", exc)
            enabled = False
    _SETTINGS = ProxySettings(
        enabled,
        (base_url or os.environ.get("PAYI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
        api_key or os.environ.get("PAYI_API_KEY") or None,
    )
    return _SETTINGS


def reset() -> None:
    global _SETTINGS
    _SETTINGS = None


def active() -> ProxySettings | None:
    """The proxy settings when the current call is in proxy mode, else None."""
    flag = fastcontext.get_current().get(PROXY_KEY)  # get_value(PROXY_KEY) without its Python call
    settings = _SETTINGS
    if flag is None:
        return settings if settings is not None and settings.enabled else None
    if not flag:
        return None
    return settings if settings is not None else configure(None)


def _compact(value: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(dict(value), separators=(",", ":")).encode()).decode()


def context_headers(ctx: BusinessContext | None) -> dict[str, str]:
    """The ``xProxy-*`` headers of a business context, as Pay-i's proxy reads them."""
    headers: dict[str, str] = {}
    if ctx is None:
        return headers
    for name, header, kind in _ATTRIBUTION:
        value = getattr(ctx, name)
        if value is None or value == ():
            continue
        headers[header] = ",".join(value) if kind == P.LIST else str(value)
    for name, header in _PROPERTIES:
        props = getattr(ctx, name)
        if props:
            headers[header] = _compact({k: v for k, v in props.items() if v is not None})
    return headers


def call_headers(route: str, provider_layer: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The headers that send the current call through the proxy (None: not in proxy mode).

    ``route`` is the proxy's name of the provider (``openai``, ``azure.openai``, ``anthropic``);
    ``provider_layer`` the call's own ``xProxy-*`` headers as a context layer."""
    settings = active()
    if settings is None:
        return None
    headers = context_headers(call_context(provider_layer))
    if settings.api_key:
        headers[P.API_KEY] = settings.api_key
    headers[ROUTE_HEADER] = f"{settings.base_url}/api/v1/proxy/{route}"
    return headers
