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
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType
from typing import Any, TypeVar, Unpack

from opentelemetry import context as otel_context

from payi_otel import propagation
from payi_otel import protocol as P
from payi_otel.context_validation import FIELDS, ContextLayer, layer_from_headers, validate_layer

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

# The per-process instance id of the default use case (named after the calling module).
PROCESS_USE_CASE_ID = str(uuid.uuid4())

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class BusinessContext:
    """The merged business context in effect (global defaults applied). Immutable."""

    use_case_name: str | None = None
    use_case_id: str | None = None
    use_case_version: int | None = None
    use_case_step: str | None = None
    user_id: str | None = None
    account_name: str | None = None
    request_tags: tuple[str, ...] | None = None
    limit_ids: tuple[str, ...] | None = None
    request_properties: Mapping[str, str | None] | None = None
    use_case_properties: Mapping[str, str | None] | None = None
    price_as_category: str | None = None
    price_as_resource: str | None = None
    resource_scope: str | None = None
    _attributes: Mapping[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def span_attributes(self) -> Mapping[str, Any]:
        """Span attributes (names from ``payi_otel.attributes``); computed once, read-only."""
        attrs = self._attributes
        if attrs is None:
            attrs = MappingProxyType(self._build_attributes())
            object.__setattr__(self, "_attributes", attrs)
        return attrs

    def _build_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, attribute in _SPAN_ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                out[attribute] = value
        for name, prefix in _SPAN_ATTRIBUTE_PREFIXES:
            props = getattr(self, name)
            if props:
                for key, value in props.items():
                    if value is not None:
                        out[prefix + key] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        """The values that are set, as plain Python values (lists and dicts are copies)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out


_EMPTY = BusinessContext()
# Span attributes: one per field, and a flattened attribute per key of a property map (PROPS).
_SPAN_ATTRIBUTES = tuple((f.name, f.attribute) for f in P.CONTEXT_FIELDS if f.kind != P.PROPS)
_SPAN_ATTRIBUTE_PREFIXES = tuple((f.name, f.attribute) for f in P.CONTEXT_FIELDS if f.kind == P.PROPS)
_USE_CASE_BOUND = tuple(f.name for f in P.CONTEXT_FIELDS if f.use_case_bound)


def _scalar(layer: dict[str, Any], key: str, inherited: Any) -> Any:
    value = layer.get(key)
    if value is None:
        return inherited
    return value if value != "" else None


def _union(layer: dict[str, Any], key: str, inherited: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = layer.get(key)
    if value is None:
        return inherited
    if not value:
        return None
    if not inherited:
        return tuple(value)
    return inherited + tuple(v for v in value if v not in inherited)


def _merge_props(layer: dict[str, Any], key: str, inherited: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    value = layer.get(key)
    if value is None:
        return inherited
    if not value:
        return None
    return MappingProxyType({**inherited, **value} if inherited else dict(value))


# The fields outside the use case, each with the merge rule of its kind: a scalar replaces, a list is the
# union with the parent's, a property map merges key by key.
_KIND_MERGES: dict[str, Callable[[dict[str, Any], str, Any], Any]] = {
    P.STR: _scalar,
    P.LIST: _union,
    P.PROPS: _merge_props,
}
_UNBOUND_MERGES = tuple(
    (f.name, _KIND_MERGES[f.kind]) for f in P.CONTEXT_FIELDS if not f.use_case_bound and f.name != "use_case_name"
)


def _merge(
    parent: BusinessContext | None, layer: dict[str, Any], new_id: Callable[[], str], strict: bool
) -> BusinessContext:
    """Apply one validated layer on top of ``parent`` (Pay-i's nesting rules)."""
    p = parent or _EMPTY
    name = layer.get("use_case_name")
    new_instance = False
    if name is None:
        uc_name = p.use_case_name
    elif name == "":
        uc_name = None
    else:
        uc_name = name
        new_instance = name != p.use_case_name

    if name == "":
        uc_id = version = step = uc_props = None
    else:
        uc_id, version, step, uc_props = p.use_case_id, p.use_case_version, p.use_case_step, p.use_case_properties

    if uc_name is None:
        if strict:
            for key in _USE_CASE_BOUND:
                value = layer.get(key)
                if value is not None and value != "" and value != {}:
                    raise ValueError(
                        f"{key}: requires a use_case_name in effect (give use_case_name here, in an "
                        "enclosing track/track_context, or in instrument())"
                    )
        uc_id = version = step = uc_props = None
    else:
        if "use_case_id" in layer:
            uc_id = layer["use_case_id"] or None
        elif new_instance:
            uc_id = new_id()
        version = layer.get("use_case_version", version)
        step = _scalar(layer, "use_case_step", step)
        uc_props = _merge_props(layer, "use_case_properties", uc_props)

    return BusinessContext(
        use_case_name=uc_name,
        use_case_id=uc_id,
        use_case_version=version,
        use_case_step=step,
        use_case_properties=uc_props,
        **{name: merge(layer, name, getattr(p, name)) for name, merge in _UNBOUND_MERGES},
    )


def _uuid4() -> str:
    return str(uuid.uuid4())


def merge(parent: BusinessContext | None, **layer: Unpack[ContextLayer]) -> BusinessContext:
    """Apply one layer of context keywords on top of ``parent`` and return the result (pure).

    Rules (Pay-i's): ``None`` inherits; an empty value clears; ``limit_ids`` and ``request_tags``
    are the union with the parent's (parent first, deduplicated); property dicts merge with the
    new keys winning; a different ``use_case_name`` starts a new instance (a fresh uuid4
    ``use_case_id`` unless one is given) while the same name keeps the parent's id;
    ``use_case_name=""`` clears name, id, version, step and use-case properties. A use-case id,
    version, step or properties without a use-case name in effect raises ``ValueError``.
    """
    return _merge(parent, validate_layer(layer), _uuid4, strict=True)


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
    frame = otel_context.get_value(_KEY)
    return frame if isinstance(frame, _Frame) else None


def _with_frame(frame: _Frame) -> otel_context.Context:
    return otel_context.set_value(_KEY, frame)


def current_business_context() -> BusinessContext | None:
    """The merged business context in effect here (global defaults applied), or ``None``."""
    frame = otel_context.get_value(_KEY)
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
