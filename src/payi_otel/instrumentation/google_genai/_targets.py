"""What is wrapped in google-genai, and what each wrapped method means.

``generate_content`` and ``generate_content_stream`` are wrapped at the SDK's per-request methods
``Models._generate_content`` / ``_generate_content_stream`` (and the ``AsyncModels`` ones), present in
every release from 1.0: the public methods may send several requests for one call (automatic function
calling, continuation), and each request is billed, so each gets its own span and cost record. Chats
call the same methods. ``embed_content`` and ``generate_images`` send one request and are wrapped as
they are.

The API that serves a call is read from the client: ``gcp.vertex_ai`` when ``vertexai`` is set,
``gcp.gemini`` (the Gemini Developer API) otherwise; both are Pay-i category ``system.google.vertex``
with resource ``google.<model>``, as Pay-i's cloud files them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from payi_otel.core import Call, CallRecord, SpanCore
from payi_otel.instrumentation._enforce import check_limits, request_size
from payi_otel.instrumentation._wrapping import Target
from payi_otel.instrumentation.google_genai._content import input_messages, output_messages, system_instructions
from payi_otel.instrumentation.google_genai._read import (
    GenerateStream,
    read_embed,
    read_generate,
    read_images,
    resource_model,
)
from payi_otel.instrumentation.google_genai._usage import _g
from payi_otel.stream import AsyncStreamProxy, StreamProxy

logger = logging.getLogger(__name__)

PROVIDER_GEMINI = "gcp.gemini"
PROVIDER_VERTEX = "gcp.vertex_ai"
CATEGORY = "system.google.vertex"


class ClientInfo:
    """Which API a client talks to, and where."""

    __slots__ = ("address", "base_url", "port", "provider", "uri")

    def __init__(self, api_client: Any) -> None:
        options = getattr(api_client, "_http_options", None)
        base_url = _g(options, "base_url")
        self.base_url = base_url
        self.provider = PROVIDER_VERTEX if getattr(api_client, "vertexai", False) else PROVIDER_GEMINI
        self.address: str | None = None
        self.port: int | None = None
        self.uri: str | None = None
        if isinstance(base_url, str) and base_url:
            self.uri = base_url
            try:
                parts = urlsplit(base_url)
                self.address = parts.hostname
                self.port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
            except ValueError:
                pass


class State:
    """Configuration and caches shared by the operations of one instrumentation."""

    def __init__(self, core: SpanCore, version: str) -> None:
        self.core = core
        self.module_tag = f"google-genai/{version}"
        self._clients: weakref.WeakKeyDictionary[Any, ClientInfo] = weakref.WeakKeyDictionary()

    def client_info(self, api_client: Any) -> ClientInfo:
        base_url = _g(getattr(api_client, "_http_options", None), "base_url")
        try:
            info = self._clients.get(api_client)
        except TypeError:
            return ClientInfo(api_client)
        if info is None or info.base_url != base_url:
            info = self._clients[api_client] = ClientInfo(api_client)
        return info


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _request_params(rec: CallRecord, config: Any) -> None:
    if config is None:
        return
    max_tokens = _g(config, "max_output_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        rec.max_tokens = max_tokens
    rec.temperature = _number(_g(config, "temperature"))
    rec.top_p = _number(_g(config, "top_p"))


class Operation:
    """One wrapped google-genai method."""

    def __init__(
        self, state: State, operation: str, read: Callable[[CallRecord, Any], None] | None, stream: bool, is_async: bool
    ) -> None:
        self.state = state
        self.operation = operation
        self.read = read
        self.stream = stream
        self.is_async = is_async

    def begin(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any]]:
        state = self.state
        info = state.client_info(getattr(instance, "_api_client", None))
        model = kwargs.get("model")
        rec = CallRecord(
            provider=info.provider,
            operation=self.operation,
            category=CATEGORY,
            request_model=resource_model(model) if isinstance(model, str) else None,
            server_address=info.address,
            server_port=info.port,
            provider_uri=info.uri,
            instrumented_module=state.module_tag,
            stream=self.stream,
        )
        if rec.request_model:
            rec.resource = f"google.{rec.request_model}"
        config = kwargs.get("config")
        _request_params(rec, config)
        check_limits(rec, lambda: (request_size(kwargs), self._output_bound(rec, config)))
        if state.core.capture_content and self.operation == "generate_content":
            rec.input_messages = input_messages(kwargs.get("contents"))
            rec.system_instructions = system_instructions(config)
        return state.core.start(rec), kwargs

    def _output_bound(self, rec: CallRecord, config: Any) -> int | None:
        """The output tokens the request allows: ``max_output_tokens`` per candidate (none for embeddings and
        images, whose output is not text tokens); None when it sets no bound."""
        if self.operation != "generate_content":
            return 0
        candidates = _g(config, "candidate_count")
        n = candidates if isinstance(candidates, int) and not isinstance(candidates, bool) and candidates > 1 else 1
        return rec.max_tokens * n if rec.max_tokens is not None else None

    def finish(self, call: Call, result: Any) -> Any:
        if self.stream:
            handler = GenerateStream(call)
            # A generator: the request is sent when the caller first reads from it (with the span current).
            return (AsyncStreamProxy if self.is_async else StreamProxy)(result, call, handler)
        call.record.status_code = 200  # the SDK raises APIError for any other status
        if self.read is not None:
            self.read(call.record, result)
        if call.capture_content and self.operation == "generate_content":
            call.record.output_messages = output_messages([result])
        call.end()
        return result


def targets(state: State) -> list[Target]:
    rows: list[Target] = []
    for is_async, cls in ((False, "Models"), (True, "AsyncModels")):
        for method, operation, read, stream in (
            ("_generate_content", "generate_content", read_generate, False),
            ("_generate_content_stream", "generate_content", None, True),
            ("embed_content", "embeddings", read_embed, False),
            ("generate_images", "image_generation", read_images, False),
        ):
            rows.append(Target("google.genai.models", cls, method, Operation(state, operation, read, stream, is_async)))
    return rows


__all__ = ["CATEGORY", "PROVIDER_GEMINI", "PROVIDER_VERTEX", "ClientInfo", "Operation", "State", "targets"]
