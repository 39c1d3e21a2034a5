"""What an instrumentor knows about one provider call (:class:`CallRecord`), and the vocabulary around it:
stream outcomes, exception names, the reader of a provider error's HTTP status and request id."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from payi_otel.units import Usage

__all__ = [
    "ABANDONED",
    "CLOSED_EARLY",
    "COMPLETED",
    "ERROR",
    "REQUEST_FIELDS",
    "CallRecord",
    "ErrorInfo",
    "fq_name",
    "no_error_info",
]

# Stream outcomes (payi.stream.outcome).
COMPLETED = "completed"
CLOSED_EARLY = "closed_early"
ERROR = "error"
ABANDONED = "abandoned"


@dataclass(slots=True)
class CallRecord:
    """What an instrumentor knows about one provider call. The core turns it into span attributes."""

    provider: str  # gen_ai.provider.name, e.g. "openai", "azure.ai.openai"
    operation: str  # gen_ai.operation.name, e.g. "chat", "embeddings"
    category: str  # Pay-i category, e.g. "system.openai"
    request_model: str | None = None
    response_model: str | None = None
    resource: str | None = None  # Pay-i resource when it differs from the model (Azure deployment mapping)
    resource_scope: str | None = None  # provider-derived price scope; the business context's own wins
    server_address: str | None = None
    server_port: int | None = None
    provider_uri: str | None = None
    instrumented_module: str | None = None  # e.g. "openai/3.54.0"
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    usage: Usage | None = None
    usage_incomplete_reason: str | None = None  # set => payi.usage.complete = false
    status_code: int | None = None
    response_id: str | None = None
    finish_reasons: list[str] | None = None
    tool_calls: list[dict[str, str]] | None = None  # [{"name": ..., "arguments": "..."}]
    stream_outcome: str | None = None
    # Content, only filled when capture is on: messages and system instructions in the conventions' schema
    # (payi_otel.messages).
    input_messages: Any = None
    output_messages: Any = None
    system_instructions: Any = None
    business_layer: Mapping[str, Any] | None = None  # innermost context layer (per-call headers)
    proxied: bool = False  # sent through a Pay-i proxy, which stores the call (no ingest event)
    reservation_id: str | None = None  # held against the call's block limits (settled by its ingest)


# CallRecord's leading fields, in this order: what an instrumentor knows before it reads the call's parameters.
# The instrumentors pass them positionally (a call with a dozen keywords costs about twice as much on the caller's
# thread; a test checks the order).
REQUEST_FIELDS = (
    "provider",
    "operation",
    "category",
    "request_model",
    "response_model",
    "resource",
    "resource_scope",
    "server_address",
    "server_port",
    "provider_uri",
    "instrumented_module",
    "stream",
)


def fq_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


ErrorInfo = Callable[[BaseException], "tuple[int | None, str | None]"]


def no_error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """The default reader of a provider error: it knows no HTTP status and no request id."""
    return None, None
