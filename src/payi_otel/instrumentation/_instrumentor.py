"""What every provider instrumentor shares: a span core made from ``instrument()``'s keyword arguments, the
wraps it makes when the SDK is imported (not before), and removes again on ``uninstrument()``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from payi_otel.core import SpanCore
from payi_otel.instrumentation._wrapping import Target, WrapSet
from payi_otel.record import ErrorInfo

__all__ = ["ProviderInstrumentor"]


class ProviderInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # the base class is untyped
    """Base of the provider instrumentors. A subclass names the distributions it instruments (``_instruments``),
    the SDK package whose import sets it up (``_package``, from distribution ``_distribution``) and, in
    :meth:`_prepare`, reads ``instrument()``'s settings (a bad one raises there) and returns what builds its wrap
    table once the SDK is imported.

    Nothing of the SDK is imported by ``instrument()``: an SDK the application never imports costs it no import
    time and no memory. The table is built and wrapped when the application imports the SDK, or at once if it
    already has."""

    _instruments: tuple[str, ...] = ()
    _package = ""
    _distribution = ""
    _wraps: WrapSet | None = None

    def _prepare(self, kwargs: Mapping[str, Any]) -> Callable[[str | None], list[Target]]:
        """Check ``instrument()``'s settings; return the builder of the wrap table for an SDK version, which runs
        once the SDK is imported and may import it."""
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        build = self._prepare(kwargs)
        wraps = self._wraps = WrapSet()

        def when_imported() -> None:
            sdk_version = self.sdk_version()
            wraps.wrap(build(sdk_version), sdk_version)

        wraps.on_import(self._package, when_imported)

    def sdk_version(self) -> str | None:
        """The installed SDK's version, read from its distribution."""
        try:
            return version(self._distribution)
        except PackageNotFoundError:  # pragma: no cover - instrument() checks _instruments first
            return None

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

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None
