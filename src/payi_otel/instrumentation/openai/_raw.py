"""Raw responses (``with_raw_response`` / ``with_streaming_response``): the span ends when the caller
parses or closes the body (or drops the response)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from payi_otel.core import Call

from ._results import end_call

if TYPE_CHECKING:
    from ._operation import OpenAIOperation

logger = logging.getLogger(__name__)

_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]


class RawPending:
    """A raw response whose body has not been read yet: ends the span when it is parsed or closed."""

    __slots__ = ("__weakref__", "call", "op", "proxy")

    def __init__(self, op: OpenAIOperation, call: Call) -> None:
        self.op = op
        self.call = call
        self.proxy: Any = None

    def parsed(self, result: Any) -> Any:
        if self.proxy is not None or self.call.ended:
            return result
        if self.op.is_stream_result(result):
            self.proxy = self.op.wrap_stream(self.call, result)
            return self.proxy
        self.op.read(self.call.record, result, self.call.capture_content)
        end_call(self.call)
        return result

    def closed(self) -> None:
        if self.proxy is not None:
            self.proxy.payi_close()
        elif not self.call.ended:
            self.call.record.usage_incomplete_reason = "raw response closed before its body was parsed"
            end_call(self.call)

    @staticmethod
    def abandoned(call: Call) -> None:
        if not call.ended:
            call.record.usage_incomplete_reason = "raw response discarded before its body was parsed"
            end_call(call)


_in_flight: weakref.WeakKeyDictionary[Any, RawPending] = weakref.WeakKeyDictionary()
# The mapping's backing dict (typeshed does not declare it): "no raw response in flight", the common case,
# then costs one dict truth test per parse or close.
_in_flight_refs: dict[Any, RawPending] = _in_flight.data  # type: ignore[attr-defined]


def track_raw(op: OpenAIOperation, call: Call, raw: Any) -> None:
    """Keep ``call`` open until ``raw``'s body is parsed or closed, or ``raw`` is dropped."""
    _in_flight[raw] = RawPending(op, call)
    weakref.finalize(raw, RawPending.abandoned, call)


def raw_parse_hook(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
    result = wrapped(*args, **kwargs)
    if not _in_flight_refs:
        return result
    pending = _in_flight.get(instance)
    if pending is None:
        return result
    try:
        return pending.parsed(result)
    except Exception:
        logger.debug("could not read a parsed raw response", exc_info=True)
        return result


def raw_close_hook(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
    if _in_flight_refs:
        pending = _in_flight.pop(instance, None)
        if pending is not None:
            try:
                pending.closed()
            except Exception:
                logger.debug("could not finish a closed raw response", exc_info=True)
    return wrapped(*args, **kwargs)


def helper_close_hook(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
    """Stream helpers (``chat.completions.stream()``, ``responses.stream()``) close the HTTP response
    directly; end our stream's span first so it is not left to garbage collection."""
    raw_stream = getattr(instance, "_raw_stream", None)
    close = getattr(raw_stream, "payi_close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.debug("could not close instrumented stream", exc_info=True)
    return wrapped(*args, **kwargs)


def raw_types() -> tuple[type, ...]:
    types: list[type] = []
    try:
        from openai._legacy_response import LegacyAPIResponse

        types.append(LegacyAPIResponse)
    except ImportError:  # pragma: no cover
        pass
    try:
        from openai._response import BaseAPIResponse

        types.append(BaseAPIResponse)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)
