"""Google GenAI instrumentation (google-genai 1.0 through 3.x): the Gemini Developer API and Vertex AI.

Wrapped (sync and ``client.aio``): ``models.generate_content``, ``models.generate_content_stream``
(so chats too), ``models.embed_content`` and ``models.generate_images``; see :mod:`._targets` for
where, and :mod:`._usage` for the units. ``gen_ai.provider.name`` is ``gcp.gemini`` or
``gcp.vertex_ai``; the Pay-i category is ``system.google.vertex`` and the resource ``google.<model>``.
A ``google.genai.errors.APIError`` is recorded with its ``code`` as the HTTP status and re-raised
unchanged. Nothing here needs Pillow.
"""

from __future__ import annotations

from typing import Any

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation.google_genai._read import error_info
from payi_otel.instrumentation.google_genai._targets import PROVIDER_GEMINI, PROVIDER_VERTEX, State, targets


def _version() -> str | None:
    try:
        from google.genai.version import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return None


class GoogleGenAIInstrumentor(ProviderInstrumentor):
    """Instruments google-genai clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _instruments = ("google-genai >= 1.0, < 4",)

    def _instrument(self, **kwargs: Any) -> None:
        version = _version()
        core = self._span_core(kwargs, error_info)
        self._wrap(targets(State(core, version or "unknown")), version)


__all__ = ["PROVIDER_GEMINI", "PROVIDER_VERTEX", "GoogleGenAIInstrumentor"]
