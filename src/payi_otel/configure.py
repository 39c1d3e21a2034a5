"""``instrument()``: the one call that sets up payi-otel in code.

It sets the global business-context defaults, enables thread propagation, discovers this
distribution's instrumentors (entry-point group ``opentelemetry_instrumentor``), and, when no
SDK ``TracerProvider`` is configured yet, sets one up that exports to Pay-i. It reads the same
environment variables as ``opentelemetry-instrument``: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (through the SDK ``Resource``), ``OTEL_SDK_DISABLED`` and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Collection, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Unpack

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]  # module is marked untyped
    BaseInstrumentor,
)

from payi_otel import context as _context
from payi_otel import enforcement, propagation, proxy_mode
from payi_otel import processor as context_processor
from payi_otel.context_validation import ContextLayer, validate_layer

__all__ = ["Instrumentation", "available_instrumentors", "instrument"]

_LOG = logging.getLogger(__name__)
_DIST_NAME = "payi-otel"
_LOCK = threading.Lock()
_HANDLE: Instrumentation | None = None
# The SDK TracerProvider instrument() created and registered globally. OpenTelemetry does not
# allow replacing the global provider, so after uninstrument() a later instrument() reuses it.
_OWN_PROVIDER: Any = None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def available_instrumentors() -> dict[str, EntryPoint]:
    """This distribution's instrumentor entry points, by entry-point name (e.g. ``payi_openai``)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group="opentelemetry_instrumentor"):
        dist = getattr(ep, "dist", None)
        if dist is not None and _canonical(dist.name) == _DIST_NAME:
            found[ep.name] = ep
    return found


def _disabled_by_env() -> set[str]:
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class Instrumentation:
    """What ``instrument()`` set up. ``uninstrument()`` undoes all of it."""

    def __init__(self, arguments: tuple[Any, ...]) -> None:
        self._arguments = arguments
        self._warned_different = False
        self.defaults: _context.BusinessContext | None = None
        self.instrumentors: dict[str, BaseInstrumentor] = {}
        self.tracer_provider: Any = None  # the SDK provider the Pay-i processor was added to
        self.span_processor: Any = None
        self.active = True

    def uninstrument(self) -> None:
        """Uninstrument the instrumentors, remove thread propagation, shut down the Pay-i span
        processor and clear the global defaults. ``instrument()`` can be called again after."""
        global _HANDLE
        with _LOCK:
            if not self.active:
                return
            self.active = False
            for name, instrumentor in self.instrumentors.items():
                try:
                    instrumentor.uninstrument()
                except Exception:  # never fail the app while tearing down
                    _LOG.warning("payi-otel: uninstrumenting %s failed", name, exc_info=True)
            self.instrumentors = {}
            propagation.uninstall()
            if self.span_processor is not None:
                _detach_processor(self.tracer_provider, context_processor.forget_processor(self.tracer_provider))
                _detach_processor(self.tracer_provider, self.span_processor)
                try:
                    self.span_processor.shutdown()
                except Exception:
                    _LOG.warning("payi-otel: shutting down the Pay-i span processor failed", exc_info=True)
                self.span_processor = None
            _context.clear_global_defaults()
            proxy_mode.reset()
            enforcement.reset()
            if _HANDLE is self:
                _HANDLE = None

    def __repr__(self) -> str:
        return (
            f"Instrumentation(active={self.active}, instrumentors={sorted(self.instrumentors)}, "
            f"exporting={self.span_processor is not None})"
        )


def _detach_processor(provider: Any, processor: Any) -> None:
    # The SDK has no public way to remove a span processor; drop it from the provider's
    # multi-processor when that structure is the one we know, so repeated
    # instrument()/uninstrument() cycles do not pile up dead processors.
    multi = getattr(provider, "_active_span_processor", None)
    processors = getattr(multi, "_span_processors", None)
    lock = getattr(multi, "_lock", None)
    if multi is not None and isinstance(processors, tuple) and lock is not None:
        with lock:
            multi._span_processors = tuple(p for p in processors if p is not processor)


def _check_arguments(instruments: Any, exporter: Any, config: Any) -> tuple[frozenset[str] | None, dict[str, Any]]:
    if instruments is not None:
        if isinstance(instruments, (str, bytes)) or not isinstance(instruments, Collection):
            raise TypeError(
                f"instruments: must be None or a set of instrumentor names such as {{'payi_openai'}}, "
                f"got {type(instruments).__name__}"
            )
        names = frozenset(instruments)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"instruments: every entry must be a string, got {type(name).__name__}")
        known = available_instrumentors()
        unknown = sorted(names - set(known))
        if unknown:
            raise ValueError(
                f"instruments: unknown instrumentor(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(known)) or 'none'}"
            )
        instruments = names
    if exporter is not None and not isinstance(exporter, bool):
        raise TypeError(f"exporter: must be None, True or False, got {type(exporter).__name__}")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config: must be a dict of instrumentor options, got {type(config).__name__}")
    for key in config:
        if not isinstance(key, str) or not key.isidentifier():
            raise TypeError(f"config: keys must be keyword-argument names, got {key!r}")
    return instruments, dict(config)


def instrument(
    *,
    instruments: Collection[str] | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    exporter: bool | None = None,
    config: Mapping[str, Any] | None = None,
    payi: Any = None,
    proxy: bool | None = None,
    enforce_limits: bool | str | None = None,
    enforce_fail: str | None = None,
    **context_defaults: Unpack[ContextLayer],
) -> Instrumentation:
    """Set up payi-otel. Call once, early; later calls return the same handle.

    * context keywords (``use_case_name``, ``user_id``, ``limit_ids``, ``request_properties``, ...):
      the global business-context defaults, the outermost layer under every ``track`` /
      ``track_context``. Without ``use_case_name`` the default use case is named after the
      calling module (with a per-process instance id).
    * ``instruments``: instrumentor entry-point names to enable (``{"payi_openai"}``); ``None``
      enables every installed one. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` is honoured.
    * ``tracer_provider`` / ``meter_provider``: passed to the instrumentors (default: the globals).
    * ``exporter``: ``None`` adds the Pay-i exporter only when no SDK ``TracerProvider`` is
      configured yet (creating and registering one); ``True`` always adds it; ``False`` never.
    * ``config``: provider options passed as keyword arguments to every instrumentor's
      ``instrument()`` (e.g. ``{"azure_deployments": {...}}``).
    * ``payi``: an official ``payi.Payi`` or ``payi.AsyncPayi`` client (or a list of them, as Pay-i's
      ``payi_instrument`` takes): the Pay-i exporter sends to its base URL with its API key and its
      ``default_headers``, instead of ``PAYI_BASE_URL`` / ``PAYI_API_KEY``.
    * ``proxy``: send instrumented OpenAI / Azure OpenAI / Anthropic calls through the Pay-i proxy at
      that base URL (``None``: ``$PAYI_PROXY``, default off); see :mod:`payi_otel.proxy_mode`.
    * ``enforce_limits``: check block limits before each call without a proxy (``True`` / ``"reserve"`` or
      ``"cached"``; ``None``: ``$PAYI_ENFORCE_LIMITS``, default off), ``enforce_fail`` ``"open"`` (default)
      or ``"closed"`` when the service cannot answer; see :mod:`payi_otel.enforcement`.

    Raises ``TypeError`` / ``ValueError`` naming the argument for bad input, before changing
    anything. Instrumentors that fail to load are skipped with a warning, never raised.
    """
    global _HANDLE
    layer = validate_layer(context_defaults)
    names, options = _check_arguments(instruments, exporter, config)
    if proxy is not None and not isinstance(proxy, bool):
        raise TypeError(f"proxy: must be None, True or False, got {type(proxy).__name__}")
    if enforce_limits is not None:
        enforcement.parse_mode(enforce_limits, "enforce_limits")
    if enforce_fail not in (None, "open", "closed"):
        raise ValueError(f"enforce_fail: must be 'open' or 'closed', got {enforce_fail!r}")
    destination = payi_client_settings(payi)
    arguments = (
        layer,
        names,
        tracer_provider,
        meter_provider,
        exporter,
        options,
        tuple(sorted(destination.items())),
        proxy,
        enforce_limits,
        enforce_fail,
    )

    with _LOCK:
        if _HANDLE is not None:
            handle = _HANDLE
            if handle._arguments != arguments and not handle._warned_different:
                handle._warned_different = True
                _LOG.warning(
                    "payi-otel: instrument() called again with different arguments; the first configuration stays"
                )
            else:
                _LOG.debug("payi-otel: instrument() already called; returning the existing handle")
            return handle

        handle = Instrumentation(arguments)
        handle.defaults = _context.set_global_defaults(**layer)
        proxy_mode.configure(proxy, destination.get("base_url"), destination.get("api_key"))
        enforcement.configure(enforce_limits, enforce_fail, destination.get("base_url"), destination.get("api_key"))
        propagation.install()
        try:
            provider = _setup_exporter(handle, tracer_provider, exporter, destination)
        except Exception as exc:  # never fail the app over telemetry
            _LOG.warning("payi-otel: setting up the Pay-i exporter failed: %s", exc, exc_info=True)
            provider = tracer_provider
        _load_instrumentors(handle, names, provider, meter_provider, options)
        _HANDLE = handle
        return handle


def payi_client_settings(payi: Any) -> dict[str, Any]:
    """Exporter settings (base URL, key, headers) taken from an official Pay-i client; ``{}`` for None.

    Raises ``TypeError`` naming ``payi`` for anything else."""
    if payi is None:
        return {}
    clients = list(payi) if isinstance(payi, list | tuple) else [payi]
    try:
        from payi import AsyncPayi, Payi
    except ImportError:
        raise TypeError("payi: needs the official `payi` package (pip install payi)") from None
    if not clients or not all(isinstance(c, Payi | AsyncPayi) for c in clients):
        raise TypeError(f"payi: expected a payi.Payi or payi.AsyncPayi client (or a list of them), got {payi!r}")
    client = next((c for c in clients if isinstance(c, Payi)), clients[0])  # either carries the same settings
    headers = {k: v for k, v in client._custom_headers.items() if isinstance(v, str)}
    return {
        "base_url": str(client.base_url).rstrip("/"),
        "api_key": client.api_key,
        "extra_headers": tuple(sorted(headers.items())),
    }


def _setup_exporter(
    handle: Instrumentation, tracer_provider: Any, exporter: bool | None, destination: dict[str, Any]
) -> Any:
    """Add the Pay-i span processor where wanted; return the provider for the instrumentors."""
    global _OWN_PROVIDER
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

    if exporter is False:
        return tracer_provider
    if _sdk_disabled():
        _LOG.debug("payi-otel: OTEL_SDK_DISABLED=true, not setting up the Pay-i exporter")
        return tracer_provider

    target = tracer_provider
    create = False
    if target is None:
        current = trace.get_tracer_provider()
        if isinstance(current, SDKTracerProvider):
            target = current
            if exporter is None and current is not _OWN_PROVIDER:
                _LOG.debug("payi-otel: an SDK TracerProvider is already configured; not adding the Pay-i exporter")
                return None
        elif isinstance(current, trace.ProxyTracerProvider):
            create = True
        else:
            if exporter:
                _LOG.warning(
                    "payi-otel: the global TracerProvider (%s) is not an SDK TracerProvider; "
                    "cannot add the Pay-i exporter",
                    type(current).__name__,
                )
            return None
    elif exporter is None:
        return tracer_provider  # the caller configured their own provider
    elif not isinstance(target, SDKTracerProvider):
        _LOG.warning(
            "payi-otel: tracer_provider (%s) is not an SDK TracerProvider; cannot add the Pay-i exporter",
            type(target).__name__,
        )
        return tracer_provider

    processor = _pay_i_processor(destination)
    if processor is None:
        return tracer_provider
    if create:
        from opentelemetry.sdk.resources import Resource

        target = SDKTracerProvider(resource=Resource.create())
        trace.set_tracer_provider(target)
        _OWN_PROVIDER = target
    context_processor.ensure_processor(target)
    target.add_span_processor(processor)
    handle.tracer_provider = target
    handle.span_processor = processor
    return tracer_provider


def _pay_i_processor(destination: dict[str, Any]) -> Any:
    # Imported here, when a processor is wanted, so that `import payi_otel` stays light.
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from payi_otel.exporters import PayiSpanExporter

    try:
        return BatchSpanProcessor(PayiSpanExporter(**destination))
    except Exception as exc:
        _LOG.warning("payi-otel: could not create the Pay-i span exporter (%s); spans will not be sent to Pay-i", exc)
        return None


def _load_instrumentors(
    handle: Instrumentation,
    names: frozenset[str] | None,
    tracer_provider: Any,
    meter_provider: Any,
    options: dict[str, Any],
) -> None:
    disabled = _disabled_by_env()
    if "*" in disabled:
        _LOG.debug("payi-otel: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=* disables every instrumentor")
        return
    kwargs = dict(options)
    if tracer_provider is not None:
        kwargs["tracer_provider"] = tracer_provider
    if meter_provider is not None:
        kwargs["meter_provider"] = meter_provider

    for name, ep in available_instrumentors().items():
        if names is not None and name not in names:
            continue
        if name in disabled:
            _LOG.debug("payi-otel: %s disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", name)
            continue
        try:
            instrumentor = ep.load()()
        except ModuleNotFoundError as exc:
            if exc.name and not exc.name.startswith("payi_otel"):
                _LOG.debug("payi-otel: skipping %s: %s is not installed", name, exc.name)
            else:
                _LOG.warning("payi-otel: could not load instrumentor %s: %s", name, exc)
            continue
        except Exception as exc:
            _LOG.warning("payi-otel: could not load instrumentor %s: %s", name, exc)
            continue
        try:
            conflict = instrumentor._check_dependency_conflicts()
        except Exception as exc:
            _LOG.warning("payi-otel: dependency check of %s failed: %s", name, exc)
            continue
        if conflict is not None:
            _LOG.debug("payi-otel: skipping %s: %s", name, conflict)
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            _LOG.debug("payi-otel: %s was already instrumented elsewhere; leaving it as is", name)
            continue
        try:
            instrumentor.instrument(skip_dep_check=True, **kwargs)
        except Exception as exc:
            _LOG.warning("payi-otel: instrumenting %s failed: %s", name, exc, exc_info=True)
            continue
        handle.instrumentors[name] = instrumentor
