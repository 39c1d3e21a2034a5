"""What the Stainless-generated provider SDKs (openai, anthropic) share: the shape of their errors and of
their raw responses (``with_raw_response`` / ``with_streaming_response``)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from payi_otel.core import Call, CallRecord
from payi_otel.instrumentation._wrapping import FirstUse, Target

logger = logging.getLogger(__name__)


def error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and provider request id of an ``APIStatusError`` (``status_code``, ``request_id``)."""
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    return (
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        request_id if isinstance(request_id, str) and request_id else None,
    )


class _HasUrl(Protocol):
    url: Any


_Info = TypeVar("_Info", bound=_HasUrl)


class ClientInfos(Generic[_Info]):
    """What a client's endpoint says (provider, address, ...), made by ``make(client, base_url)`` once per
    client and base URL. Read for every call: the client of the previous call is recognised with one weak
    reference call, the others are kept in a weak mapping, and the base URL is read from the attribute the
    SDK's ``base_url`` property returns (the property is a Python call, in openai 2.x+ an import too)."""

    def __init__(self, make: Callable[[Any, Any], _Info]) -> None:
        self._make = make
        self._by_client: weakref.WeakKeyDictionary[Any, _Info] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Any], Any, _Info] | None = None

    def get(self, client: Any) -> _Info:
        url = getattr(client, "_base_url", None)
        if url is None:
            url = getattr(client, "base_url", None)
        last = self._last
        if last is not None and last[1] is url and last[0]() is client:
            return last[2]
        try:
            info = self._by_client.get(client)
            if info is None or info.url is not url:
                info = self._by_client[client] = self._make(client, url)
            self._last = (weakref.ref(client), url, info)  # one assignment: threads never see a torn triple
        except TypeError:  # not weakly referenceable: not cached
            return self._make(client, url)
        return info


class RawReader(Protocol):
    """What a provider operation tells :class:`RawResponses` about its results."""

    def is_stream_result(self, result: Any) -> bool: ...

    def wrap_stream(self, call: Call, stream: Any) -> Any: ...

    def read(self, rec: CallRecord, result: Any, capture: bool) -> None: ...

    def end(self, call: Call) -> None: ...


class _Pending:
    """A raw response whose body has not been read yet: ends the span when it is parsed or closed."""

    __slots__ = ("__weakref__", "call", "op", "proxy")

    def __init__(self, op: RawReader, call: Call) -> None:
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
        self.op.end(self.call)
        return result

    def closed(self, raw: Any) -> None:
        if self.proxy is not None:
            self.proxy.payi_close()
        elif not self.call.ended:
            rec = self.call.record
            parsed = None if rec.stream else _body_read(raw)
            if parsed is not None:  # read with read() / json() / text(), not parse(): the same result object
                self.op.read(rec, parsed, self.call.capture_content)
            elif rec.stream:
                rec.usage_incomplete_reason = "raw stream closed without parse(): its events were not read for usage"
            else:
                rec.usage_incomplete_reason = "raw response closed before its body was read"
            self.op.end(self.call)


def _body_read(raw: Any) -> Any:
    """What ``raw.parse()`` would return, built apart from ``raw`` (whose own parse cache stays untouched), when
    the caller has read the whole body some other way; None when it has not (or it cannot be built)."""
    http_response = getattr(raw, "http_response", None)
    if http_response is None or not hasattr(http_response, "_content"):  # httpx keeps a body once it is read
        return None
    try:
        return raw._client._process_response_data(
            data=http_response.json(), cast_to=raw._cast_to, response=http_response
        )
    except Exception:
        logger.debug("could not read a raw response's body for usage", exc_info=True)
        return None


def _abandoned(op: RawReader, call: Call) -> None:
    if not call.ended:
        call.record.usage_incomplete_reason = "raw response discarded before its body was parsed"
        op.end(call)


class RawResponses:
    """The raw responses of one SDK package (``"anthropic"``): a call whose result is a raw response ends
    when the caller parses it (a stream is then proxied), closes it, or drops it unread. The SDK's parse
    and close are wrapped when the first such response is kept for later (until then no call needs them)."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.pending: weakref.WeakKeyDictionary[Any, _Pending] = weakref.WeakKeyDictionary()
        # The mapping's backing dict (typeshed does not declare it), for a cheap "anything in flight?" test.
        self.pending_refs: dict[Any, _Pending] = self.pending.data  # type: ignore[attr-defined]
        types: list[type] = []
        for module, name in (("_legacy_response", "LegacyAPIResponse"), ("_response", "BaseAPIResponse")):
            with contextlib.suppress(ImportError, AttributeError):  # anthropic 2.x has no _legacy_response
                types.append(getattr(importlib.import_module(f"{package}.{module}"), name))
        self.types = tuple(types)
        self.first_use = FirstUse()

    def adopt(self, op: RawReader, call: Call, raw: Any) -> Any:
        """``raw`` is what the wrapped method returned; returns it unchanged."""
        status = getattr(raw, "status_code", None)
        if isinstance(status, int):
            call.record.status_code = status
        # with_raw_response (LegacyAPIResponse): the SDK has already read a non-streamed body.
        if not call.record.stream and type(raw).__name__ == "LegacyAPIResponse":
            try:
                parsed = raw.parse()
            except Exception:
                logger.debug("could not parse raw response for usage", exc_info=True)
                call.record.usage_incomplete_reason = "raw response body could not be parsed"
            else:
                if parsed is not None and not isinstance(parsed, (str, bytes)):
                    op.read(call.record, parsed, call.capture_content)
            op.end(call)
            return raw
        self.first_use.need()  # parse and close are wrapped before the caller can reach them
        self.pending[raw] = _Pending(op, call)
        weakref.finalize(raw, _abandoned, op, call)
        return raw

    def _parse_hook(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if not self.pending_refs:  # no raw response in flight: the common case costs one test of a dict
            return result
        pending = self.pending.get(instance)
        if pending is None:
            return result
        try:
            return pending.parsed(result)
        except Exception:
            logger.debug("could not read a parsed raw response", exc_info=True)
            return result

    def _close_hook(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        if self.pending_refs:
            pending = self.pending.pop(instance, None)
            if pending is not None:
                try:
                    pending.closed(instance)
                except Exception:
                    logger.debug("could not finish a closed raw response", exc_info=True)
        return wrapped(*args, **kwargs)

    def targets(self) -> list[Target]:
        p, parse, close = self.package, self._parse_hook, self._close_hook
        return [
            Target(module, cls, method, hook, raw=True, on_first_use=self.first_use)
            for module, cls, method, hook in (
                (f"{p}._legacy_response", "LegacyAPIResponse", "_parse", parse),
                (f"{p}._response", "APIResponse", "_parse", parse),
                (f"{p}._response", "AsyncAPIResponse", "_parse", parse),
                (f"{p}._response", "APIResponse", "close", close),
                (f"{p}._response", "AsyncAPIResponse", "close", close),
            )
        ]


__all__ = ["ClientInfos", "RawReader", "RawResponses", "error_info"]
