"""Business context: who and what a GenAI call is for.

``track`` (decorator) and ``track_context`` (``with`` / ``async with``) push a *layer* of business
context; layers nest following Pay-i's rules (see ``merge``). The active context lives in the
OpenTelemetry Context (contextvars), so concurrent asyncio tasks never see each other's values,
and ``payi_otel.propagation`` carries it into threads.

The span core reads the active context on every provider call with
``current_business_context()``: an O(1) lookup returning an immutable, pre-merged
``BusinessContext`` whose ``span_attributes`` are computed once and cached.

Global defaults (``set_global_defaults``, called by ``instrument()``) form the outermost layer.
Every entered layer remembers the global version it was merged against, so changing the
defaults later is reflected in reads without re-merging on every read.

The model (``BusinessContext``) and the merge rules are in ``payi_otel.context_model``; this module holds
the state: global defaults, the entered layers and the public scopes.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from contextvars import Token
from types import FrameType
from typing import Any, TypeVar, Unpack, overload

from opentelemetry import context as otel_context

from payi_otel import fastcontext, propagation
from payi_otel.context_model import BusinessContext, _merge, _uuid4, merge
from payi_otel.context_validation import ContextLayer, layer_from_headers, validate_layer

__all__ = [
    "BusinessContext",
    "ContextLayer",
    "clear_global_defaults",
    "current_business_context",
    "get_context",
    "layer_from_headers",
    "merge",
    "set_global_defaults",
    "track",
    "track_context",
]

_KEY = otel_context.create_key("payi_otel.business_context")
# Proxy mode switched on or off for a block of code (track_context(proxy=...); see payi_otel.proxy_mode).
PROXY_KEY = otel_context.create_key("payi_otel.proxy_mode")
_get_value = fastcontext.get_value

# The per-process instance id of the default use case (named after the calling module).
PROCESS_USE_CASE_ID = str(uuid.uuid4())

_F = TypeVar("_F", bound=Callable[..., Any])


# --- global defaults ------------------------------------------------------------------------

# (version, defaults) swapped as one tuple so readers never see a torn pair.
_GLOBAL: tuple[int, BusinessContext | None] = (0, None)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def caller_module_use_case_name(skip_package: bool = True) -> str:
    """Default use-case name: the calling module's file stem, lower-cased, spaces -> ``_``
    (other characters Pay-i rejects become ``_`` too)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and skip_package and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    filename = frame.f_code.co_filename if frame is not None else "main"
    stem = os.path.splitext(os.path.basename(filename))[0].lower().replace(" ", "_")
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in stem)
    return cleaned.strip("_")[:64] or "main"


def set_global_defaults(**layer: Unpack[ContextLayer]) -> BusinessContext:
    """Set the outermost context layer (what ``instrument()`` does with its context keywords).

    Without ``use_case_name`` the default use case is named after the calling module and gets a
    per-process uuid4 id (``PROCESS_USE_CASE_ID``). Replaces earlier defaults; contexts already
    entered see the new defaults on their next read.
    """
    global _GLOBAL
    values = validate_layer(layer)
    if "use_case_name" not in values:
        values["use_case_name"] = caller_module_use_case_name()
        values.setdefault("use_case_id", PROCESS_USE_CASE_ID)
    defaults = _merge(None, values, _uuid4, strict=True)
    _GLOBAL = (_GLOBAL[0] + 1, defaults)
    return defaults


def clear_global_defaults() -> None:
    """Remove the global defaults; contexts already entered see that on their next read."""
    global _GLOBAL
    _GLOBAL = (_GLOBAL[0] + 1, None)


# --- active context storage -----------------------------------------------------------------


class _Frame:
    """One entered layer: stored in the OpenTelemetry Context while its scope is active."""

    __slots__ = ("_fresh_id", "cache", "layer", "owner", "parent", "token")

    def __init__(self, parent: _Frame | None, layer: dict[str, Any], owner: object | None) -> None:
        self.parent = parent
        self.layer = layer
        self.owner = owner
        self.token: Token[otel_context.Context] | None = None
        self._fresh_id: str | None = None
        gstate = _GLOBAL
        base = parent.resolve(gstate) if parent is not None else gstate[1]
        # The merge happens here, once per entry; a new instance id is drawn at most once.
        self.cache = (gstate[0], _merge(base, layer, self.fresh_id, strict=True))

    def fresh_id(self) -> str:
        if self._fresh_id is None:
            self._fresh_id = _uuid4()
        return self._fresh_id

    def resolve(self, gstate: tuple[int, BusinessContext | None]) -> BusinessContext:
        version, merged = self.cache
        if version == gstate[0]:
            return merged
        base = self.parent.resolve(gstate) if self.parent is not None else gstate[1]
        merged = _merge(base, self.layer, self.fresh_id, strict=False)
        self.cache = (gstate[0], merged)
        return merged


def _new_frame(layer: dict[str, Any], owner: object | None = None) -> _Frame:
    if not propagation.INSTALLED:
        propagation.install()
    return _Frame(_current_frame(), layer, owner)


def _current_frame() -> _Frame | None:
    frame = _get_value(_KEY)
    return frame if isinstance(frame, _Frame) else None


def _with_frame(frame: _Frame) -> otel_context.Context:
    return otel_context.set_value(_KEY, frame)


def current_business_context() -> BusinessContext | None:
    """The merged business context in effect here (global defaults applied), or ``None``."""
    frame = _get_value(_KEY)
    if not isinstance(frame, _Frame):  # outside every scope: None
        return _GLOBAL[1]
    version, merged = frame.cache
    if version == _GLOBAL[0]:
        return merged
    return frame.resolve(_GLOBAL)


def call_context(layer: Mapping[str, Any] | None) -> BusinessContext | None:
    """The business context of one provider call: the one in effect, with the call's own ``xProxy-*``
    headers (``layer``) applied; a layer that does not validate is left out (never raises)."""
    ctx = current_business_context()
    if layer:
        with contextlib.suppress(TypeError, ValueError):
            ctx = merge(ctx, **layer)
    return ctx


def get_context() -> dict[str, Any]:
    """The active business context as a plain dict (only keys that are set)."""
    ctx = current_business_context()
    return ctx.as_dict() if ctx is not None else {}


# --- public scopes --------------------------------------------------------------------------


class track_context:
    """Context manager (``with`` and ``async with``) that applies a business-context layer.

    ``__enter__`` returns the merged ``BusinessContext``. The same object can be entered again,
    nested or from concurrent tasks: every entry is independent.

    ``proxy=True`` / ``False`` switches proxy mode on or off inside the block (see
    :mod:`payi_otel.proxy_mode`); ``None`` (the default) keeps what is in effect.
    """

    __slots__ = ("_layer", "_proxy")

    def __init__(self, *, proxy: bool | None = None, **layer: Unpack[ContextLayer]) -> None:
        if proxy is not None and not isinstance(proxy, bool):
            raise TypeError(f"proxy: must be None, True or False, got {type(proxy).__name__}")
        self._layer = validate_layer(layer)
        self._proxy = proxy

    def __enter__(self) -> BusinessContext:
        frame = _new_frame(self._layer, self)
        ctx = _with_frame(frame)
        if self._proxy is not None:
            ctx = otel_context.set_value(PROXY_KEY, self._proxy, ctx)
        frame.token = otel_context.attach(ctx)
        return frame.cache[1]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        frame = _current_frame()
        while frame is not None and frame.owner is not self:
            frame = frame.parent
        if frame is not None and frame.token is not None:
            token, frame.token = frame.token, None
            otel_context.detach(token)

    async def __aenter__(self) -> BusinessContext:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._layer.items())
        return f"track_context({args})"


def _wrap_function(fn: Callable[..., Any], layer: dict[str, Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(_with_frame(_new_frame(layer)))
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return wrapper


def _wrap_coroutine_function(fn: Callable[..., Any], layer: dict[str, Any]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(_with_frame(_new_frame(layer)))
        try:
            return await fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return wrapper


def _start_in_new_frame(
    fn: Callable[..., Any], layer: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[otel_context.Context, Any]:
    """Merge ``layer`` once for this call and create the (async) generator inside it.

    Returns the context to attach around each resumption, and the generator.
    """
    scoped = _with_frame(_new_frame(layer))
    token = otel_context.attach(scoped)
    try:
        return scoped, fn(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _wrap_generator_function(fn: Callable[..., Any], layer: dict[str, Any]) -> Callable[..., Any]:
    # The context is active during each resumption of the generator and absent between them.
    # send/throw/close are forwarded exactly as ``yield from`` would, but each inside the context.
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scoped, gen = _start_in_new_frame(fn, layer, args, kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = otel_context.attach(scoped)
            try:
                value = gen.send(to_send) if to_throw is None else gen.throw(to_throw)
            except StopIteration as stop:
                return stop.value
            finally:
                otel_context.detach(token)
                to_throw = None
            try:
                to_send = yield value
            except GeneratorExit:
                token = otel_context.attach(scoped)
                try:
                    gen.close()
                finally:
                    otel_context.detach(token)
                raise
            except BaseException as exc:  # forwarded into the generator, as the caller intended
                to_throw = exc

    return wrapper


def _wrap_async_generator_function(fn: Callable[..., Any], layer: dict[str, Any]) -> Callable[..., Any]:
    # Same protocol as the generator wrapper, with asend/athrow/aclose.
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        scoped, agen = _start_in_new_frame(fn, layer, args, kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = otel_context.attach(scoped)
            try:
                value = await (agen.asend(to_send) if to_throw is None else agen.athrow(to_throw))
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(token)
                to_throw = None
            try:
                to_send = yield value
            except GeneratorExit:
                token = otel_context.attach(scoped)
                try:
                    await agen.aclose()
                finally:
                    otel_context.detach(token)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


@overload
def track(func: _F, /, **layer: Unpack[ContextLayer]) -> _F: ...
@overload
def track(func: None = None, /, **layer: Unpack[ContextLayer]) -> Callable[[_F], _F]: ...
def track(func: _F | None = None, /, **layer: Unpack[ContextLayer]) -> Any:
    """Decorator applying a business-context layer while the function body runs.

    Works on sync and async functions, generator and async generator functions (the context is
    active during each resumption, not between them; the merge and any new use-case instance id
    happen once per call, at the first resumption). Usable bare (``@track``) or with keywords.
    The keywords are validated at decoration time; the merge happens at every call.
    """
    validated = validate_layer(layer)

    def decorate(fn: _F) -> _F:
        if inspect.isasyncgenfunction(fn):
            wrapper = _wrap_async_generator_function(fn, validated)
        elif inspect.isgeneratorfunction(fn):
            wrapper = _wrap_generator_function(fn, validated)
        elif inspect.iscoroutinefunction(fn):
            wrapper = _wrap_coroutine_function(fn, validated)
        elif callable(fn):
            wrapper = _wrap_function(fn, validated)
        else:
            raise TypeError(f"track: can only decorate a callable, got {type(fn).__name__}")
        return functools.wraps(fn)(wrapper)  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
