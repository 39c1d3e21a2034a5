"""What every provider instrumentor shares: a span core made from ``instrument()``'s keyword arguments, and the
wraps it removes again on ``uninstrument()``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from payi_otel.core import SpanCore
from payi_otel.instrumentation._wrapping import Target, WrapSet
from payi_otel.record import ErrorInfo

__all__ = ["ProviderInstrumentor"]


class ProviderInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # the base class is untyped
    """Base of the provider instrumentors. A subclass names the packages it instruments (``_instruments``) and,
    in ``_instrument``, wraps its targets (:meth:`_wrap`) around a span core (:meth:`_span_core`)."""

    _instruments: tuple[str, ...] = ()
    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    @staticmethod
    def _span_core(kwargs: Mapping[str, Any], error_info: ErrorInfo) -> SpanCore:
        """The span core for ``instrument(**kwargs)``: the providers and content capture every instrumentor takes,
        and the provider's reader of an exception's HTTP status and request id."""
        return SpanCore(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            logger_provider=kwargs.get("logger_provider"),
            error_info=error_info,
        )

    def _wrap(self, targets: list[Target], version: str | None = None) -> None:
        """Wrap ``targets`` (those that ``version`` of the SDK has), to be unwrapped by ``uninstrument()``."""
        wraps = WrapSet()
        wraps.wrap(targets, version)
        self._wraps = wraps

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None
