"""Google GenAI instrumentation (google-genai 1.0 through 3.x): the Gemini Developer API and Vertex AI.

Wrapped (sync and ``client.aio``): ``models.generate_content``, ``models.generate_content_stream``
(so chats too), ``models.embed_content`` and ``models.generate_images``; see :mod:`._targets` for
where, and :mod:`._usage` for the units. ``gen_ai.provider.name`` is ``gcp.gemini`` or
``gcp.vertex_ai``; the Pay-i category is ``system.google.vertex`` and the resource ``google.<model>``.
A ``google.genai.errors.APIError`` is recorded with its ``code`` as the HTTP status and re-raised
unchanged. Nothing here needs Pillow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation._wrapping import Target
from payi_otel.instrumentation.google_genai._read import error_info


class GoogleGenAIInstrumentor(ProviderInstrumentor):
    """Instruments google-genai clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _instruments = ("google-genai >= 1.0, < 4",)

    _package = "google.genai"
    _distribution = "google-genai"

    def _prepare(self, kwargs: Mapping[str, Any]) -> Callable[[str | None], list[Target]]:
        core = self._span_core(kwargs, error_info)

        def build(version: str | None) -> list[Target]:
            from ._targets import State, targets  # the instrumentation's modules load with the SDK, not before

            return targets(State(core, version or "unknown"))

        return build


__all__ = ["GoogleGenAIInstrumentor"]
