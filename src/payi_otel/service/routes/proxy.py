"""``/api/v1/proxy/<provider>/...``: provider calls through the service, with real-time block limits.

The bodies are the providers' own APIs, so these routes are left out of the OpenAPI document (the
README lists them); see :mod:`payi_otel.service.proxy.forward` for what happens to a call. A proxied
call is latency-sensitive: :class:`ProxyFastPath` serves it straight from ASGI, ahead of the
framework's middleware and routing; the routes answer the same way when the app runs without it
(and answer other methods with 405).
"""

from __future__ import annotations

import functools

from fastapi import APIRouter
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from payi_otel.service.proxy.base import Provider
from payi_otel.service.proxy.forward import Proxy

PREFIX = "/api/v1/proxy"
ROUTES = ("openai", "azure.openai", "anthropic")
_PREFIX_SLASH = PREFIX + "/"


@functools.cache
def provider(name: str) -> Provider:
    """The provider module behind a route, imported at its first call (service start-up stays light)."""
    if name == "anthropic":
        from payi_otel.service.proxy.anthropic import AnthropicProvider

        return AnthropicProvider()
    from payi_otel.service.proxy.openai import OpenAIProvider

    return OpenAIProvider(azure=name == "azure.openai")


def _split(path: str) -> tuple[str, str] | None:
    """``/api/v1/proxy/<name>/<rest>`` -> (name, rest) for a proxied provider, else None."""
    if not path.startswith(_PREFIX_SLASH):
        return None
    name, slash, rest = path[len(_PREFIX_SLASH) :].partition("/")
    return (name, rest) if slash and name in ROUTES else None


class ProxyFastPath:
    """ASGI layer that answers ``POST /api/v1/proxy/<provider>/...`` itself and hands everything else on."""

    def __init__(self, app: ASGIApp, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _split(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        await self.proxy.serve(scope, receive, send, provider(found[0]), found[1])


class _ProviderRoute:
    """The route of one provider (an ASGI endpoint), for the app without the fast path."""

    def __init__(self, proxy: Proxy, name: str) -> None:
        self.proxy = proxy
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.proxy.serve(scope, receive, send, provider(self.name), scope["path_params"]["path"])


def router(proxy: Proxy) -> APIRouter:
    api = APIRouter()
    for name in ROUTES:
        endpoint = _ProviderRoute(proxy, name)
        api.routes.append(Route(f"{PREFIX}/{name}/{{path:path}}", endpoint, methods=["POST"], include_in_schema=False))
    return api
