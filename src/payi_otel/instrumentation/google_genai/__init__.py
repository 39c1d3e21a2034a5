"""Google GenAI instrumentation (google-genai 1.0 through 3.x): the Gemini Developer API and Vertex AI.

Wrapped (sync and ``client.aio``): ``models.generate_content``, ``models.generate_content_stream``
(so chats too), ``models.embed_content`` and ``models.generate_images``; see :mod:`._targets` for
where, and :mod:`._usage` for the units. ``gen_ai.provider.name`` is ``gcp.gemini`` or
``gcp.vertex_ai``; the Pay-i category is ``system.google.vertex`` and the resource ``google.<model>``.
A ``google.genai.errors.APIError`` is recorded with its ``code`` as the HTTP status and re-raised
unchanged. Nothing here needs Pillow.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from payi_otel.core import SpanCore
from payi_otel.instrumentation._wrapping import WrapSet
from payi_otel.instrumentation.google_genai._read import error_info
from payi_otel.instrumentation.google_genai._targets import PROVIDER_GEMINI, PROVIDER_VERTEX, State, targets

_instruments = ("google-genai >= 1.0, < 4",)


def _version() -> str | None:
    try:
        from google.genai.version import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return None


class GoogleGenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments google-genai clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        version = _version()
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


__all__ = ["PROVIDER_GEMINI", "PROVIDER_VERTEX", "GoogleGenAIInstrumentor"]
