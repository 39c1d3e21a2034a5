"""Making an OpenTelemetry ``Context`` current, and reading the current one, at the cost of one ``ContextVar``
operation.

``opentelemetry.context.attach`` / ``detach`` / ``get_current`` go through two Python calls each (the API
function, then the runtime context's method) before they reach the one ``ContextVar`` that holds the current
context. On the paths that run for every provider call and every streamed chunk this module uses that
``ContextVar`` directly when OpenTelemetry's runtime context is the standard ``ContextVarsRuntimeContext`` (the
default, and the only one OpenTelemetry ships), and the public API otherwise. The effect is identical: the
context OpenTelemetry sees as current is the one set here, and a reset restores exactly the previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token, copy_context
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.instrumentation import utils as instrumentation_utils
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace import propagation as trace_propagation

__all__ = [
    "enter",
    "get_current",
    "get_value",
    "instrumentation_enabled",
    "leave",
    "leave_sync",
    "runner",
    "with_span",
]


def _context_var() -> ContextVar[Context] | None:
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:  # pragma: no cover - an API without the standard runtime context
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:  # a configured OTEL_PYTHON_CONTEXT: use the API
        return None
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


_VAR = _context_var()


def _leave_checked(token: Token[Context]) -> None:
    try:
        _VAR.reset(token)  # type: ignore[union-attr]  # only installed when _VAR is set
    except (ValueError, RuntimeError):  # a token of another context: the API's own handling (a logged error)
        otel_context.detach(token)


def _get_value(key: str) -> object:
    return _VAR.get().get(key)  # type: ignore[union-attr]  # only installed when _VAR is set


# OpenTelemetry's two suppression keys (``suppress_instrumentation()`` sets both), as
# ``opentelemetry.instrumentation.utils.is_instrumentation_enabled`` reads them.
_SUPPRESS_PLAIN = getattr(instrumentation_utils, "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN", None)


def _instrumentation_enabled() -> bool:
    ctx = _VAR.get()  # type: ignore[union-attr]  # only installed when _VAR is set
    return not (ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_PLAIN))  # type: ignore[arg-type]


_SPAN_KEY: str | None = getattr(trace_propagation, "_SPAN_KEY", None)


def _with_span(span: Span, context: Context) -> Context:
    values: dict[str, object] = {**context}
    values[_SPAN_KEY] = span  # type: ignore[index]  # only installed when the key is known
    return Context(values)


# ``context`` with ``span`` current: what ``opentelemetry.trace.set_span_in_context(span, context)`` returns,
# built in one step (a copy of ``context`` with the span under OpenTelemetry's own key) when that key is known.
with_span: Callable[[Span, Context], Context] = _with_span if isinstance(_SPAN_KEY, str) else set_span_in_context


def _runner(context: Context) -> Callable[..., Any]:
    own = copy_context()
    own.run(_VAR.set, context)  # type: ignore[union-attr]  # only installed when _VAR is set
    return own.run


def _runner_api(context: Context) -> Callable[..., Any]:
    def run(fn: Callable[..., Any], *args: Any) -> Any:
        token = otel_context.attach(context)
        try:
            return fn(*args)
        finally:
            otel_context.detach(token)

    return run


# ``runner(context)(fn)`` calls ``fn()`` with ``context`` current, for code that does so again and again (each read
# of a stream). With the standard runtime it is ``contextvars.Context.run`` of a context of its own: a copy of the
# caller's contextvars, taken when ``runner`` is called, with ``context`` current in it. Entering and leaving that
# costs next to nothing, where setting and resetting the variable costs two copies of its mapping. ``fn`` sees the
# contextvars as they were when ``runner`` was called (OpenTelemetry's: ``context``), and what ``fn`` sets stays in
# that copy. The copy can be entered by one thread at a time (``RuntimeError`` otherwise), as a generator.
runner: Callable[[Context], Callable[..., Any]]
enter: Callable[[Context], Token[Context]]
leave: Callable[[Token[Context]], None]
# ``leave`` for a token entered in the same synchronous stretch of code (no ``await``, no ``yield`` between),
# which can only be a token of the current context: no check.
leave_sync: Callable[[Token[Context]], None]
get_current: Callable[[], Context]
get_value: Callable[[str], Any]
instrumentation_enabled: Callable[[], bool]  # False inside OpenTelemetry's suppress_instrumentation()
if _VAR is not None:
    runner = _runner
    enter = _VAR.set  # make ``context`` current; returns the token that restores the previous one
    leave = _leave_checked
    leave_sync = _VAR.reset
    get_current = _VAR.get
    get_value = _get_value
    instrumentation_enabled = (
        _instrumentation_enabled if _SUPPRESS_PLAIN is not None else instrumentation_utils.is_instrumentation_enabled
    )
else:  # pragma: no cover - depends on OTEL_PYTHON_CONTEXT
    runner = _runner_api
    enter = otel_context.attach
    leave = leave_sync = otel_context.detach
    get_current = otel_context.get_current
    get_value = otel_context.get_value
    instrumentation_enabled = instrumentation_utils.is_instrumentation_enabled
