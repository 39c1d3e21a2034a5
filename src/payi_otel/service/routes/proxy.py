"""``/api/v1/proxy/<provider>/...``: provider calls through the service, with real-time block limits.

The bodies are the providers' own APIs, so these routes are left out of the OpenAPI document (the
README lists them); see :mod:`payi_otel.service.proxy.forward` for what happens to a call.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from payi_otel.service.proxy.anthropic import AnthropicProvider
from payi_otel.service.proxy.base import Provider
from payi_otel.service.proxy.forward import Proxy
from payi_otel.service.proxy.openai import OpenAIProvider

PROVIDERS: tuple[Provider, ...] = (OpenAIProvider(azure=False), OpenAIProvider(azure=True), AnthropicProvider())


def router(proxy: Proxy) -> APIRouter:
    api = APIRouter(prefix="/api/v1/proxy", tags=["proxy"])

    def route(provider: Provider) -> None:
        async def forward(request: Request, path: str) -> Response:
            return await proxy.handle(request, provider, path)

        forward.__name__ = f"proxy_{provider.name.replace('.', '_')}"
        api.add_api_route(f"/{provider.name}/{{path:path}}", forward, methods=["POST"], include_in_schema=False)

    for provider in PROVIDERS:
        route(provider)
    return api
