"""Declarative wrap tables, shared by every provider module.

A provider module lists :class:`Target` rows (module, class, method, the :class:`Operation` that knows
the call, optional version bounds). :class:`WrapSet` feature-probes each row (missing module, class or
method is skipped, not an error), wraps it with wrapt, and unwraps all of them on uninstrument. Every
wrapper checks the set's ``active`` flag first, so wrappers the SDK cached before uninstrument (for
example per-client ``with_raw_response`` callables) become pass-throughs.

One wrapper function serves sync and async methods: the async variant differs only in awaiting the
original (and, when the operation has one, its async after-call step ``afinish``, for what can only be
read by awaiting, such as a response body), and both share :func:`_begin` / :func:`_done` / :func:`_failed`.

A row may be deferred (``on_first_use``, a :class:`FirstUse`): a hook inside the SDK that only some calls
need (the route of proxied requests, the parsing of raw responses) is wrapped the first time such a call
happens, so the calls that never need it do not pay for a wrapper they pass straight through.

Nothing is imported for a wrap table: a row is wrapped when its module is imported (at once if it already
is, through wrapt's post-import hooks), so an installed SDK the application never imports costs it no import
time and no memory, and the SDK's modules it imports lazily (such as openai's resources) stay lazy. A row
whose module this SDK version does not have is never wrapped.

Other instrumentations (OpenTelemetry's openai-v2, OpenLLMetry, ...) wrap the same methods with wrapt.
Load order never matters: ours recognise only themselves (a marker on our wrapper functions) and always
sit directly around the SDK's own method, beneath any wrapper found there or added later
(``wrapper.__wrapped__`` is re-pointed at ours). So another instrumentation uninstrumenting removes only
its own layer, and our uninstrument removes only ours, from wherever it sits in the chain. Inside
OpenTelemetry's ``suppress_instrumentation`` our wrappers call straight through.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import wrapt
from packaging.version import InvalidVersion, Version

from payi_otel.core import Call
from payi_otel.enforcement import LimitError, PlannedCall
from payi_otel.enforcement import enabled as enforcement_enabled
from payi_otel.fastcontext import instrumentation_enabled as is_instrumentation_enabled
from payi_otel.fastcontext import leave_sync
from payi_otel.instrumentation._enforce import ReserveFirst, deferring, reserve_then

logger = logging.getLogger(__name__)

# The positional and keyword arguments wrapt hands a wrapper.
_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]

_PROXY_BASE = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2 split the base class out
_MARKER = "_payi_otel_wrapset"  # set on every wrapper function of ours: the WrapSet that owns it


def _owner_of(proxy: Any) -> Any:
    """The WrapSet that made ``proxy`` (a wrapt function wrapper), or None when it is not ours."""
    return getattr(getattr(proxy, "_self_wrapper", None), _MARKER, None)


def _chain(top: Any) -> list[Any]:
    """The wrapt proxies stacked on a method, outermost first."""
    chain = []
    while isinstance(top, _PROXY_BASE):
        chain.append(top)
        top = top.__wrapped__
    return chain


class Operation(Protocol):
    """What a provider module knows about one wrapped method.

    An operation may also define ``async def afinish(call, result) -> Any``: async methods then await it
    instead of calling :meth:`finish` (it reads what needs awaiting, then finishes). If it raises a
    ``BaseException`` that is not an ``Exception`` (cancellation), the call fails with it and it propagates.
    """

    def begin(self, instance: Any, args: _Args, kwargs: _Kwargs) -> tuple[Call | None, _Kwargs]:
        """Start the call's span; may return rewritten kwargs (a copy). ``None`` = do not trace."""

    def finish(self, call: Call, result: Any) -> Any:
        """Record the result and end (or hand over to a stream proxy); returns what the caller gets."""


class FirstUse:
    """The moment some calls first need deferred wrap-table rows (see :class:`Target`): :meth:`need` wraps
    them, once, in every instrumentor whose table has them; later instrumentors wrap them at once."""

    def __init__(self) -> None:
        self.needed = False  # read without the lock on the hot path: set once, never unset
        self._lock = threading.Lock()
        self._installers: list[tuple[object, Callable[[], None]]] = []

    def need(self) -> None:
        """Called before the first call that needs the rows (cheap once they are wrapped)."""
        if self.needed:
            return
        with self._lock:
            installers, self._installers = self._installers, []
            self.needed = True
        for _, install in installers:
            install()

    def _add(self, owner: object, install: Callable[[], None]) -> None:
        with self._lock:
            if not self.needed:
                self._installers.append((owner, install))
                return
        install()

    def _forget(self, owner: object) -> None:
        with self._lock:
            self._installers = [(o, i) for o, i in self._installers if o is not owner]


@dataclass(frozen=True, slots=True)
class Target:
    module: str
    cls: str
    method: str
    operation: Any  # an Operation, or a plain wrapt wrapper when raw=True
    since: str | None = None  # first SDK version with this surface (inclusive)
    until: str | None = None  # first SDK version without it (exclusive)
    raw: bool = False  # operation is already a wrapt wrapper(wrapped, instance, args, kwargs)
    on_first_use: FirstUse | None = None  # wrapped only once some call needs it (FirstUse.need)


def _version_ok(version: str | None, since: str | None, until: str | None) -> bool:
    if version is None or (since is None and until is None):
        return True
    try:
        v = Version(version)
        return (since is None or v >= Version(since)) and (until is None or v < Version(until))
    except InvalidVersion:
        return True


def _begin(op: Operation, instance: Any, args: _Args, kwargs: _Kwargs) -> tuple[Call | None, _Kwargs]:
    try:
        return op.begin(instance, args, kwargs)
    except LimitError:  # block-limit enforcement refused the call: the caller gets it, the provider is not called
        raise
    except Exception:
        logger.debug("instrumentation failed before the call; calling through", exc_info=True)
        return None, kwargs


def _done(op: Operation, call: Call, result: Any) -> Any:
    try:
        return op.finish(call, result)
    except Exception:
        logger.debug("instrumentation failed after the call", exc_info=True)
        call.end()
        return result


async def _adone(afinish: Callable[[Call, Any], Any], call: Call, result: Any) -> Any:
    try:
        return await afinish(call, result)
    except Exception:
        logger.debug("instrumentation failed after the call", exc_info=True)
        call.end()
        return result
    except BaseException as exc:  # cancelled while reading the response: the call ends with it
        _failed(call, exc)
        raise


def _failed(call: Call, exc: BaseException) -> None:
    try:
        call.fail(exc)
    except Exception:  # pragma: no cover - Call.fail already guards itself
        logger.debug("failed to record provider error", exc_info=True)


class WrapSet:
    """The wrapped targets of one instrumentor, and the switch that makes them inert."""

    def __init__(self) -> None:
        self.active = True  # until unwrap(): our wrappers pass straight through once it is False
        self.wrapped: list[tuple[type, str]] = []
        self.deferred: set[FirstUse] = set()

    def _wrapper(self, op: Operation, is_async: bool) -> Callable[..., Any]:
        def sync_wrapper(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
            if not self.active or not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            call, kwargs = _begin(op, instance, args, kwargs)
            if call is None:
                return wrapped(*args, **kwargs)
            token = call.activate()
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                leave_sync(token)
                _failed(call, exc)
                raise
            leave_sync(token)  # entered in this synchronous stretch: no check needed
            return _done(op, call, result)

        afinish = getattr(op, "afinish", None)

        async def run_async(wrapped: Callable[..., Any], call: Call, args: _Args, kwargs: _Kwargs) -> Any:
            token = call.activate()
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                call.deactivate(token)
                _failed(call, exc)
                raise
            call.deactivate(token)
            if afinish is not None:
                return await _adone(afinish, call, result)
            return _done(op, call, result)

        async def reserve_then_run(
            planned: PlannedCall, wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs
        ) -> Any:
            call, kwargs = await reserve_then(planned, lambda: _begin(op, instance, args, kwargs))
            if call is None:
                return await wrapped(*args, **kwargs)
            return await run_async(wrapped, call, args, kwargs)

        def async_wrapper(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
            if not self.active or not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            if not enforcement_enabled():
                call, kwargs = _begin(op, instance, args, kwargs)
            else:  # a block-limit reservation is awaited, not made on the event loop's thread
                try:
                    call, kwargs = deferring(lambda: _begin(op, instance, args, kwargs))
                except ReserveFirst as first:
                    return reserve_then_run(first.planned, wrapped, instance, args, kwargs)
            if call is None:
                return wrapped(*args, **kwargs)
            return run_async(wrapped, call, args, kwargs)

        return self._mark(async_wrapper if is_async else sync_wrapper)

    def _mark(self, wrapper: Callable[..., Any]) -> Callable[..., Any]:
        setattr(wrapper, _MARKER, self)
        return wrapper

    def _gated(self, raw_wrapper: Callable[..., Any]) -> Callable[..., Any]:
        def gated(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
            if not self.active or not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            return raw_wrapper(wrapped, instance, args, kwargs)

        return self._mark(gated)

    def on_import(self, package: str, then: Callable[[], object]) -> None:
        """Call ``then`` once ``package`` is imported (now if it is), unless this set is unwrapped by then. It
        runs inside the application's import statement, so a failure is logged, never raised there."""

        def hook(_module: object) -> None:
            if not self.active:
                return
            try:
                then()
            except Exception:
                logger.exception("payi-otel could not instrument %s; its calls are not traced", package)

        wrapt.register_post_import_hook(hook, package)

    def wrap(self, targets: list[Target], sdk_version: str | None = None) -> None:
        """Wrap every target present in the installed SDK, when its module is imported; skip the others.
        Deferred targets are wrapped when their :class:`FirstUse` is first needed (at once if it already was)."""
        for t in targets:
            if not _version_ok(sdk_version, t.since, t.until):
                continue
            install = functools.partial(self.on_import, t.module, functools.partial(self._wrap_target, t))
            if t.on_first_use is not None:
                self.deferred.add(t.on_first_use)
                t.on_first_use._add(self, install)
            else:
                install()

    def _wrap_target(self, t: Target) -> None:
        if not self.active:  # uninstrumented before the deferred row was needed
            return
        try:
            module = importlib.import_module(t.module)
            owner = getattr(module, t.cls)
            original = inspect.getattr_static(owner, t.method)
        except (ImportError, AttributeError):
            logger.debug("skipping %s.%s.%s: not in this SDK version", t.module, t.cls, t.method)
            return
        chain = _chain(original)
        if any(_owner_of(p) is self or getattr(_owner_of(p), "active", False) for p in chain):
            return  # ours already (a re-export of the same class, or instrumented twice)
        innermost = chain[-1].__wrapped__ if chain else original
        function = innermost.__func__ if isinstance(innermost, (staticmethod, classmethod)) else innermost
        if t.raw:
            wrapper = self._gated(t.operation)
        else:
            wrapper = self._wrapper(t.operation, inspect.iscoroutinefunction(inspect.unwrap(function)))
        if chain:  # another instrumentation's wrapper is there: ours goes beneath it, around the SDK's method
            chain[-1].__wrapped__ = wrapt.FunctionWrapper(innermost, wrapper)
        else:
            wrapt.wrap_function_wrapper(owner, t.method, wrapper)
        self.wrapped.append((owner, t.method))

    def unwrap(self) -> None:
        """Remove our wrappers, wherever they sit among other instrumentations' wrappers; wrappers of
        ours already captured elsewhere become pass-throughs."""
        self.active = False
        for first_use in self.deferred:
            first_use._forget(self)
        self.deferred.clear()
        for owner, method in self.wrapped:
            try:
                chain = _chain(inspect.getattr_static(owner, method))
            except AttributeError:
                continue
            for index, proxy in enumerate(chain):
                if _owner_of(proxy) is not self:
                    continue
                # after another instrumentation's unwrap, ours may be the bound form of our wrapper
                inner = (getattr(proxy, "_self_parent", None) or proxy).__wrapped__
                if index == 0:
                    setattr(owner, method, inner)
                else:
                    chain[index - 1].__wrapped__ = inner
                break
        self.wrapped.clear()


__all__ = ["FirstUse", "Operation", "Target", "WrapSet"]
