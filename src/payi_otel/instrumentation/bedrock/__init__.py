"""AWS Bedrock runtime instrumentation (boto3 / botocore, and aiobotocore where installed).

boto3 builds its client classes at run time, one per client, so there is no importable
``module.Class.method`` to patch per operation. Every botocore client, whenever and however it was
created (``boto3.client``, a ``boto3.Session``, ``botocore.session``, before or after ``instrument()``),
sends its requests through ``BaseClient._make_api_call(operation_name, params)``; aiobotocore's
``AioBaseClient`` overrides it with a coroutine. Wrapping those two methods instruments each Bedrock
runtime client exactly once, in the caller's own frame (so the business context in effect there is
the one recorded), and costs other AWS services one dictionary lookup.

Operations: ``Converse``, ``ConverseStream``, ``InvokeModel``, ``InvokeModelWithResponseStream``.
Category ``system.aws.bedrock``; resource = the model the ``modelId`` names (:mod:`._resources`);
units from the billed token-count headers, the body or the stream's final event (:mod:`._usage`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]  # module is marked untyped
    BaseInstrumentor,
)

from payi_otel.core import SpanCore
from payi_otel.instrumentation._wrapping import Target, WrapSet

from ._calls import BedrockCalls
from ._errors import error_info
from ._resources import resolve

_instruments = ("botocore >= 1.34.116",)  # the first release with Converse / ConverseStream


def _botocore_version() -> str:
    try:
        from botocore import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


class BedrockInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments AWS Bedrock runtime clients (boto3 / botocore; aiobotocore where installed).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        core = SpanCore(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            logger_provider=kwargs.get("logger_provider"),
            error_info=error_info,
        )
        calls = BedrockCalls(core, f"botocore/{_botocore_version()}")
        wraps = WrapSet()
        wraps.wrap(
            [
                Target("botocore.client", "BaseClient", "_make_api_call", calls),
                Target("aiobotocore.client", "AioBaseClient", "_make_api_call", calls),
            ]
        )
        self._wraps = wraps

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None


__all__ = ["BedrockInstrumentor", "error_info", "resolve"]
