"""The proxy's path of one call: check, admit against block limits, forward, answer, record.

1. The ``xProxy-*`` headers are read like a single ingest's (:mod:`.headers`; a bad one is a 400 naming
   it, before the provider is called).
2. A call naming block limits reserves its worst-case cost against them (see
   :mod:`payi_otel.service.store.reservations`); a refusal answers 400 ``limit_reached`` and the
   provider is never called.
3. The request goes upstream with every header but ``xProxy-*`` (``xProxy-Forward-<Name>`` arrives as
   ``<Name>``) and hop-by-hop ones. A JSON answer comes back as the provider sent it plus a top-level
   ``xproxy_result`` (``xproxy_error`` too on a provider error, status kept); a stream comes back
   event for event as the events arrive, ``xproxy_result`` in its last event.
4. The call is stored once, priced like an ingested event, and its reservation released, in one
   transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from payi_otel import protocol as P
from payi_otel.service.attribution import Attribution, attribution_from_headers
from payi_otel.service.errors import PayiApiError, bad_request
from payi_otel.service.models import IngestRequest, IngestUnits
from payi_otel.service.proxy import admission as admission_
from payi_otel.service.proxy.admission import WorstCase
from payi_otel.service.proxy.base import CallResult, Provider, ProxiedCall
from payi_otel.service.proxy.client import UPSTREAM_ERRORS, Response, UpstreamClient, chunks, close, decoder
from payi_otel.service.proxy.headers import API_KEY, PROPERTY_HEADERS, decode_properties, read_headers
from payi_otel.service.proxy.sse import EventSplitter, data_event, json_data, read_event, rewrite_event, with_member
from payi_otel.service.proxy.upstreams import BASE_URI_HEADER, Upstreams
from payi_otel.service.routes.common import Service, json_response
from payi_otel.service.routes.ingest import read_body
from payi_otel.service.store import Application

_RESPONSE_DROP_RAW = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})
_RESPONSE_DROP = _RESPONSE_DROP_RAW | {b"content-encoding"}  # the body is forwarded decoded
_PROVIDER_ERROR = {"code": "provider_error", "message": "The downstream provider returned an error"}
CLIENT_CLOSED = 499  # status a call is stored with when its caller went away mid-stream
_log = logging.getLogger("payi_otel.service.proxy")


def _clamp(value: int) -> int:
    return max(0, min(int(value), P.MAX_COUNT))


@dataclass(slots=True)
class _Call:
    """One proxied call on its way: who it is for, what it asks, what it holds."""

    application: Application
    attr: Attribution
    call: ProxiedCall
    event: IngestRequest  # the stored event, before its outcome is known
    provider_uri: str
    reservation_id: str | None = None
    started: float = 0.0
    first_event: float | None = None
    recorded: dict[str, Any] | None = None  # the stored call's xproxy_result


class Proxy:
    """Serves ``/api/v1/proxy/<provider>/...`` for the providers it is given, as an ASGI app: a
    proxied call is latency-sensitive, so it skips the framework's routing and request models."""

    def __init__(self, svc: Service, upstreams: Upstreams) -> None:
        self.svc = svc
        self.upstreams = upstreams
        self.client = UpstreamClient()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def serve(self, scope: Scope, receive: Receive, send: Send, provider: Provider, path: str) -> None:
        """Answer one ``POST`` to ``path`` below the provider's route; Pay-i's error bodies for what
        the proxy refuses (an unexpected exception goes to the app's error middleware)."""
        try:
            response = await self._handle(scope, receive, provider, path)
        except PayiApiError as exc:
            response = json_response(exc.body(), exc.status)
        if response is not None:
            await response(scope, receive, send)

    # --- 1 + 2: check and admit ---------------------------------------------------------------
    async def _handle(self, scope: Scope, receive: Receive, provider: Provider, path: str) -> ASGIApp | None:
        xheaders, forwarded = read_headers(scope["headers"])
        application = self.svc.authenticate_key(xheaders.get(API_KEY))
        attr = attribution_from_headers(xheaders, None)
        properties = decode_properties(xheaders)
        base = self.upstreams.base_url(provider.name, xheaders.get(BASE_URI_HEADER.lower()))
        raw = await read_body(receive)
        if raw is None:
            return None  # the caller went away before its request arrived
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
        call = provider.call(path, body, len(raw))
        if call is None:
            raise PayiApiError(
                404, "not_found", f"the proxy serves no {provider.name} API at {P.preview(path)} with this body"
            )
        try:
            event = IngestRequest.model_validate(
                {"category": call.category, "units": {}, "resource": call.model, "provider_uri": base, **properties}
            )
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = str(first["loc"][0]) if first["loc"] else "body"
            where = PROPERTY_HEADERS.get(loc) or ("body.model" if loc == "resource" else loc)
            raise bad_request("invalid_field_value", f"{where}: {first['msg']}") from None
        pending = _Call(application, attr, call, event, base)
        if attr.limit_ids:
            admission = await self.svc.committer.run(lambda: self._admit(pending), inline=True)
            if admission is not None:
                return json_response(admission, 400)
        else:
            self.svc.ingestor.check_headers(application, attr)  # no limits: nothing in the store to read
        pending.started = time.perf_counter()
        try:
            response = await self.client.send(base, path, scope["query_string"], forwarded, raw)
        except UPSTREAM_ERRORS as exc:
            await self._record(pending, CallResult(), 502, failure=f"upstream unreachable: {type(exc).__name__}")
            raise PayiApiError(
                502, "provider_error", f"the upstream {base} could not be reached: {type(exc).__name__}"
            ) from None
        except BaseException:
            await self._release(pending)
            raise
        decode = decoder(response.raw_headers)
        content_type = next((v for k, v in response.raw_headers if k.lower() == b"content-type"), b"")
        drop = _RESPONSE_DROP if decode is not None else _RESPONSE_DROP_RAW
        headers = [(k, v) for k, v in response.raw_headers if k.lower() not in drop]
        if decode is not None and response.status < 300 and content_type.startswith(b"text/event-stream"):
            return _Streamed(self._stream(pending, provider, response, decode), response.status, headers)
        try:
            content = b"".join([chunk async for chunk in chunks(response, decode or _raw)])
        except UPSTREAM_ERRORS as exc:
            close(response)
            await self._record(pending, CallResult(), 502, failure=f"upstream answer broken: {type(exc).__name__}")
            raise PayiApiError(
                502, "provider_error", f"the upstream {base} broke off its answer: {type(exc).__name__}"
            ) from None
        except BaseException:
            close(response)
            await self._release(pending)
            raise
        close(response)  # read to its end: its connection is back in the pool
        if decode is None:  # an encoding the proxy cannot read: the body goes back as it came
            await self._record(pending, CallResult(), response.status)
            return _Answer(content, response.status, headers)
        return await self._answer(pending, provider, response.status, content, headers)

    def _admit(self, pending: _Call) -> dict[str, Any] | None:
        """On the writer thread: check the headers, then reserve the worst case against the block
        limits; None when admitted, else the body of the refusal."""
        svc, app, attr, call = self.svc, pending.application, pending.attr, pending.call
        attr.block_limits_allowed = True
        svc.ingestor.check_headers(app, attr)
        worst = WorstCase(
            call.category,
            call.model,
            call.input_bound,
            call.output_bound,
            attr.price_as_category,
            attr.price_as_resource,
            attr.resource_scope,
        )
        admission = admission_.reserve(svc, app, attr.limit_ids, worst)
        if admission.held:
            pending.reservation_id = admission.reservation_id
        if admission.admitted:
            return None
        return admission_.refusal(
            svc,
            app,
            attr.limit_ids,
            admission,
            use_case_name=attr.use_case_name,
            user_id=attr.user_id,
            account_name=attr.account_name,
        )

    # --- 3: answer ------------------------------------------------------------------------------
    async def _answer(
        self, pending: _Call, provider: Provider, status: int, content: bytes, headers: list[tuple[bytes, bytes]]
    ) -> _Answer:
        document = json_data(content)
        if status < 300:
            read = provider.result(pending.call, document) if document is not None else CallResult()
            result = await self._record(pending, read, status)
        else:
            result = await self._record(pending, CallResult(), status, failure=f"http_status_{status}")
        if isinstance(document, dict):
            if status >= 400:
                content = with_member(
                    content,
                    "xproxy_error",
                    {"code": "provider_error", "message": "The downstream provider returned an error"},
                )
            content = with_member(content, "xproxy_result", result)
        return _Answer(content, status, headers)

    async def _stream(
        self, pending: _Call, provider: Provider, response: Response, decode: Callable[[bytes], bytes]
    ) -> AsyncGenerator[bytes, None]:
        """The upstream's events as they arrive (those that arrive in one read are written at once). An
        event that may be the last one (its reader says so) waits for the next event; at the end it
        carries ``xproxy_result`` (when no event could, ``xproxy_result`` comes in an event of its own
        after the others)."""
        reader = provider.stream_reader(pending.call)
        splitter = EventSplitter()
        held: tuple[bytes, dict[str, Any]] | None = None
        completed = False
        try:
            try:
                async for chunk in chunks(response, decode):
                    # the events that arrived together leave together (one write), as soon as they arrived
                    out: list[bytes] = []
                    for block in splitter.feed(chunk):
                        if pending.first_event is None:
                            pending.first_event = time.perf_counter()
                        name, data = read_event(block)
                        if data is not None and provider.is_stream_end(data):
                            if held is not None:
                                out.append(await self._last_event(pending, reader.result, held))
                                held = None
                            out.append(block)
                            continue
                        document = json_data(data)
                        may_be_last = reader.feed(name, document) if document is not None else False
                        if held is not None:
                            out.append(held[0])
                            held = None
                        if may_be_last and isinstance(document, dict):
                            held = (block, document)
                        else:
                            out.append(block)
                    if out:
                        yield b"".join(out)
            except UPSTREAM_ERRORS as exc:
                await self._record(pending, reader.result, 502, failure=f"upstream stream broken: {type(exc).__name__}")
                raise
            except Exception as exc:  # a fault of ours is not the caller leaving: store it as what it is
                _log.exception("proxy stream failed")
                with anyio.CancelScope(shield=True):
                    failure = f"proxy stream failed: {type(exc).__name__}"
                    await self._record(pending, reader.result, 500, failure=failure)
                raise
            if held is not None:
                yield await self._last_event(pending, reader.result, held)
            rest = splitter.rest()
            if rest:
                yield rest
            if pending.recorded is None:
                yield data_event({"xproxy_result": await self._record(pending, reader.result, response.status)})
            completed = True
        finally:
            close(response)
            with anyio.CancelScope(shield=True):
                if not completed and pending.recorded is None:
                    await self._record(pending, reader.result, CLIENT_CLOSED, failure="client closed the stream")

    async def _last_event(self, pending: _Call, result: CallResult, held: tuple[bytes, dict[str, Any]]) -> bytes:
        xproxy_result = await self._record(pending, result, 200)
        return rewrite_event(held[0], held[1], "xproxy_result", xproxy_result)

    # --- 4: record ------------------------------------------------------------------------------
    async def _record(
        self, pending: _Call, result: CallResult, status: int, failure: str | None = None
    ) -> dict[str, Any]:
        """Store the call once (priced like an ingested event) and release its reservation, together."""
        if pending.recorded is not None:
            return pending.recorded
        now = time.perf_counter()
        latency = _clamp(round((now - pending.started) * 1000)) if pending.started else None
        ttft = _clamp(round((pending.first_event - pending.started) * 1000)) if pending.first_event else None
        properties = dict(pending.event.properties or {})
        if failure is not None:
            properties.setdefault(P.FAILURE, failure)
        units = {
            k: IngestUnits(input=_clamp(v.get("input", 0)), output=_clamp(v.get("output", 0)))
            for k, v in result.units().items()
        }
        event = pending.event.model_copy(
            update={
                "units": units,
                "resource": _resource(result.model, pending.event.resource),
                "end_to_end_latency_ms": latency,
                "time_to_first_token_ms": ttft,
                "http_status_code": status,
                "properties": properties or None,
            }
        )
        app, attr, reservation = pending.application, pending.attr, pending.reservation_id
        attr.block_limits_allowed = True

        def work() -> dict[str, Any]:
            body = self.svc.ingestor.ingest(app, event, attr)
            if reservation is not None:
                self.svc.store.release_reservation(app.id, reservation)
            result: dict[str, Any] = body["xproxy_result"]
            return result

        pending.recorded = await self.svc.committer.run(work, inline=True)
        pending.reservation_id = None
        return pending.recorded

    async def _release(self, pending: _Call) -> None:
        reservation, app = pending.reservation_id, pending.application
        if reservation is None:
            return
        pending.reservation_id = None
        with anyio.CancelScope(shield=True):
            await self.svc.committer.run(lambda: self.svc.store.release_reservation(app.id, reservation), inline=True)


class _Answer:
    """A whole answer: the body with its length, the provider's headers kept (repeated ones too)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body, self.status, self.headers = body, status, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class _Streamed:
    """A streamed answer: the provider's status and headers, then each part of ``body`` as it comes. When the
    caller goes away, ``body`` is cancelled where it waits (in a cancel scope: its shielded clean-up runs)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: AsyncGenerator[bytes, None], status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body, self.status, self.headers = body, status, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope() as streaming:
            watcher = asyncio.get_running_loop().create_task(_cancel_when_gone(receive, streaming))
            try:
                await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
                async for part in self.body:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                watcher.cancel()
                await self.body.aclose()


async def _cancel_when_gone(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the caller disconnects (a request's body was read before its answer began)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _raw(data: bytes) -> bytes:
    return data


def _resource(model: str | None, requested: str | None) -> str | None:
    if model is None or P.text_problem(model) is not None:
        return requested
    return model
