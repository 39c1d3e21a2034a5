"""Proxy mode's route for the Stainless-generated SDKs (openai, anthropic): where the request is built.

An instrumented call in proxy mode carries :data:`~payi_otel.proxy_mode.ROUTE_HEADER` (the proxy's
base for the provider) among its headers. The SDK's ``BaseClient._build_request`` is wrapped: such a
request is built for ``<route><the provider path and query>`` instead, with the client's own
endpoint in ``xProxy-Provider-BaseUri``, and the internal header taken off. Every other request is
built as the SDK builds it. ``_build_request`` is wrapped when the first call is proxied (until then no
request needs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payi_otel.core import CallRecord
from payi_otel.enforcement import enabled as enforcement_enabled
from payi_otel.instrumentation._enforce import check_limits, request_size
from payi_otel.instrumentation._wrapping import FirstUse, Target
from payi_otel.proxy_mode import PROVIDER_BASE_URI, ROUTE_HEADER, active, call_headers

# The first proxied call: the SDKs' ``_build_request`` is wrapped from then on.
PROXIED = FirstUse()


def before_provider_call(rec: CallRecord, kwargs: dict[str, Any], route: str | None) -> dict[str, Any]:
    """What happens before an instrumented call is made: proxy mode routes it to the proxy's ``route``
    (see :func:`through_proxy`; None: the call cannot be proxied); otherwise block-limit enforcement,
    when on, checks it (raising ``LimitError`` to refuse it)."""
    if route is not None and active() is not None:  # asked first: most calls are not in proxy mode
        kwargs = through_proxy(rec, kwargs, route)
    if not rec.proxied and enforcement_enabled():  # the bounds' closure only when limits are enforced
        check_limits(rec, lambda: _bounds(rec, kwargs))
    return kwargs


def _bounds(rec: CallRecord, kwargs: dict[str, Any]) -> tuple[int, int | None]:
    n = kwargs.get("n")  # OpenAI's choices per request multiply the output bound
    output = rec.max_tokens * n if rec.max_tokens is not None and isinstance(n, int) and n > 1 else rec.max_tokens
    return request_size({k: v for k, v in kwargs.items() if not k.startswith("extra_")}), output


def through_proxy(rec: CallRecord, kwargs: dict[str, Any], route: str) -> dict[str, Any]:
    """``kwargs`` of a call in proxy mode with the proxy's headers added (and ``rec`` marked); else unchanged."""
    try:
        headers = call_headers(route, rec.business_layer)
    except Exception:  # best effort: a call that cannot be routed goes to the provider as configured
        return kwargs
    if headers is None:
        return kwargs
    PROXIED.need()  # the route is read where the request is built
    rec.proxied = True
    given = kwargs.get("extra_headers")
    return {**kwargs, "extra_headers": {**(given if isinstance(given, Mapping) else {}), **headers}}


def _rerouted(instance: Any, options: Any) -> Any:
    headers = getattr(options, "headers", None)
    if not isinstance(headers, dict) or ROUTE_HEADER not in headers:
        return None
    route = headers[ROUTE_HEADER]
    original = instance._prepare_url(options.url)  # the provider URL the SDK would call
    kept = {k: v for k, v in headers.items() if k != ROUTE_HEADER}
    kept.setdefault(PROVIDER_BASE_URI, f"{original.scheme}://{original.netloc.decode('ascii')}")
    url = f"{route}{original.raw_path.decode('ascii')}"
    copy = getattr(options, "model_copy", None) or options.copy  # pydantic 2 / pydantic 1
    return copy(update={"url": url, "headers": kept})


def build_request_hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """wrapt wrapper of ``BaseClient._build_request(options, ...)``."""
    options = args[0] if args else kwargs.get("options")
    try:
        rerouted = _rerouted(instance, options)
    except Exception:  # never break the call: an unexpected SDK shape builds the request unchanged
        rerouted = None
    if rerouted is None:
        return wrapped(*args, **kwargs)
    if args:
        return wrapped(rerouted, *args[1:], **kwargs)
    return wrapped(**{**kwargs, "options": rerouted})


def route_target(sdk: str) -> Target:
    """The wrap-table row of ``<sdk>._base_client.BaseClient._build_request``."""
    return Target(
        f"{sdk}._base_client", "BaseClient", "_build_request", build_request_hook, raw=True, on_first_use=PROXIED
    )
