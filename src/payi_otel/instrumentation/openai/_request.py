"""The request side of an OpenAI call: which client (OpenAI or Azure), which SDK types, request parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payi_otel.core import CallRecord

PROVIDER_OPENAI = "openai"
PROVIDER_AZURE = "azure.ai.openai"
CATEGORY_OPENAI = "system.openai"
CATEGORY_AZURE = "system.azureopenai"

_NOT_GIVEN_NAMES = frozenset({"NotGiven", "Omit"})


def given(value: Any) -> bool:
    return value is not None and type(value).__name__ not in _NOT_GIVEN_NAMES


class ClientInfo:
    __slots__ = ("accepts_stream_options", "address", "category", "deployment", "port", "provider", "uri", "url")

    def __init__(self, client: Any, url: Any) -> None:
        self.url = url
        azure = is_azure(client)
        self.provider = PROVIDER_AZURE if azure else PROVIDER_OPENAI
        self.category = CATEGORY_AZURE if azure else CATEGORY_OPENAI
        self.address = getattr(url, "host", None) or None
        port = getattr(url, "port", None)
        self.port = port if isinstance(port, int) else None
        self.uri = str(url) if url is not None else None
        self.deployment = getattr(client, "_azure_deployment", None) if azure else None
        # Azure accepts stream_options from API version 2024-09-01(-preview) on; older versions reject it.
        api_version = str(getattr(client, "_api_version", "") or "") if azure else ""
        self.accepts_stream_options = not azure or api_version[:10] >= "2024-09-01"


# SDK classes for isinstance checks, loaded by OpenAIInstrumentor._instrument (openai is installed then).
_azure_classes: tuple[type, ...] = ()
_stream_types: tuple[type, ...] = ()


def load_sdk_types() -> None:
    global _azure_classes, _stream_types
    from openai import AsyncAzureOpenAI, AsyncStream, AzureOpenAI, Stream

    _azure_classes = (AzureOpenAI, AsyncAzureOpenAI)
    _stream_types = (Stream, AsyncStream)


def is_azure(client: Any) -> bool:
    return isinstance(client, _azure_classes)


def call_is_stream(result: Any) -> bool:
    return isinstance(result, _stream_types)


def with_include_usage(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Ask for the usage chunk on a copy of kwargs unless the caller made an explicit choice."""
    options = kwargs.get("stream_options")
    if not given(options):
        return {**kwargs, "stream_options": {"include_usage": True}}, True
    if isinstance(options, Mapping) and "include_usage" not in options:
        return {**kwargs, "stream_options": {**options, "include_usage": True}}, True
    return kwargs, False


# Every request parameter :func:`request_params` reads: most calls set none of them.
_PARAMS = frozenset({"max_completion_tokens", "max_tokens", "max_output_tokens", "temperature", "top_p"})


def request_params(rec: CallRecord, kwargs: dict[str, Any]) -> None:
    if _PARAMS.isdisjoint(kwargs):  # one test for the common case
        return
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            rec.max_tokens = value
            break
    temperature = kwargs.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        rec.temperature = float(temperature)
    top_p = kwargs.get("top_p")
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        rec.top_p = float(top_p)
