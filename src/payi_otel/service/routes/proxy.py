"""``/api/v1/proxy/<provider>/...``: provider calls through the service, with real-time block limits.

The bodies are the providers' own APIs, so these routes are left out of the OpenAPI document (the
README lists them); see :mod:`payi_otel.service.proxy.forward` for what happens to a call.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from fastapi.responses import Response

from payi_otel.service.proxy.base import Provider
from payi_otel.service.proxy.forward import Proxy

ROUTES = ("openai", "azure.openai", "anthropic")


@functools.cache
def provider(name: str) -> Provider:
    """The provider module behind a route, imported at its first call (service start-up stays light)."""
    if name == "anthropic":
        from payi_otel.service.proxy.anthropic import AnthropicProvider

        return AnthropicProvider()
    from payi_otel.service.proxy.openai import OpenAIProvider

    return OpenAIProvider(azure=name == "azure.openai")


def router(proxy: Proxy) -> APIRouter:
    api = APIRouter(prefix="/api/v1/proxy", tags=["proxy"])

    def route(name: str) -> None:
        async def forward(request: Request, path: str) -> Response:
            return await proxy.handle(request, provider(name), path)

        forward.__name__ = f"proxy_{name.replace('.', '_')}"
        api.add_api_route(f"/{name}/{{path:path}}", forward, methods=["POST"], include_in_schema=False)

    for name in ROUTES:
        route(name)
    return api
