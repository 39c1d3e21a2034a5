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

from collections.abc import Callable, Mapping
from typing import Any

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation._stainless import error_info
from payi_otel.instrumentation._wrapping import Target


class AnthropicInstrumentor(ProviderInstrumentor):
    """Instruments Anthropic, Anthropic-on-Bedrock and Anthropic-on-Vertex clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _instruments = ("anthropic >= 0.40, < 3",)
    _package = _distribution = "anthropic"

    def _prepare(self, kwargs: Mapping[str, Any]) -> Callable[[str | None], list[Target]]:
        core = self._span_core(kwargs, error_info)

        def build(version: str | None) -> list[Target]:
            from payi_otel.instrumentation.anthropic._targets import State, targets

            return targets(State(core, version or "unknown"))

        return build


__all__ = ["AnthropicInstrumentor"]
