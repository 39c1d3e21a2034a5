"""Anthropic instrumentation (anthropic 0.40 through 2.x, sync and async).

Clients: ``Anthropic`` / ``AsyncAnthropic`` (category ``system.anthropic``), ``AnthropicBedrock``
(``system.aws.bedrock``, the Bedrock model id as resource) and ``AnthropicVertex``
(``system.google.vertex``, resource ``anthropic.<model>``). What is wrapped is in :mod:`._targets`, usage
and units in :mod:`._usage`, streams in :mod:`._streams`.

The anthropic 2.x SDK also traces its calls itself (instrumentation scope ``com.anthropic.sdk.python``,
``ANTHROPIC_OPEN_TELEMETRY``): its span is sent while ours is current, so it is a child of ours and the
Pay-i exporter keeps one event per call, ours.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from payi_otel.core import SpanCore
from payi_otel.instrumentation._stainless import error_info
from payi_otel.instrumentation._wrapping import WrapSet

_instruments = ("anthropic >= 0.40, < 3",)


def _anthropic_version() -> str | None:
    try:
        from anthropic import __version__
    except ImportError:  # pragma: no cover
        return None
    return str(__version__)


class AnthropicInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments Anthropic, Anthropic-on-Bedrock and Anthropic-on-Vertex clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from payi_otel.instrumentation.anthropic._targets import State, targets

        version = _anthropic_version()
        core = SpanCore(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            logger_provider=kwargs.get("logger_provider"),
            error_info=error_info,
        )
        wraps = WrapSet()
        wraps.wrap(targets(State(core, version or "unknown")), version)
        self._wraps = wraps

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None


__all__ = ["AnthropicInstrumentor"]
