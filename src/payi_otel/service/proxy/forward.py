"""The proxy's path of one call: check, admit against block limits, forward, answer, record.

1. The ``xProxy-*`` headers are read like a single ingest's (a bad one is a 400 naming it, before the
   provider is called); properties arrive Base64-encoded JSON, as Pay-i's proxy takes them.
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

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from payi_otel import protocol as P
from payi_otel.context_validation import parse_properties_header
from payi_otel.service.attribution import Attribution, attribution_from_headers
from payi_otel.service.errors import PayiApiError, bad_request
from payi_otel.service.models import IngestRequest, IngestUnits
from payi_otel.service.proxy import admission as admission_
from payi_otel.service.proxy.admission import WorstCase
from payi_otel.service.proxy.base import CallResult, Provider, ProxiedCall
from payi_otel.service.proxy.sse import EventSplitter, data_event, json_data, read_event, rewrite_event, with_member
from payi_otel.service.proxy.upstreams import BASE_URI_HEADER, Upstreams
from payi_otel.service.routes.common import Service, json_response
from payi_otel.service.store import Application

_PREFIX = P.HEADER_PREFIX.lower()
_FORWARD_PREFIX = _PREFIX + "forward-"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})
# event field -> header
_PROPERTY_HEADERS = {
    "properties": P.PROPERTIES_HEADERS["request_properties"],
    "use_case_properties": P.PROPERTIES_HEADERS["use_case_properties"],
}
_PROVIDER_ERROR = {"code": "provider_error", "message": "The downstream provider returned an error"}
CLIENT_CLOSED = 499  # status a call is stored with when its caller went away mid-stream
_log = logging.getLogger("payi_otel.service.proxy")


def upstream_headers(headers: Any) -> dict[str, str]:
    """The request headers the provider gets: no ``xProxy-*`` (but ``xProxy-Forward-<Name>`` as ``<Name>``)."""
    out: dict[str, str] = {}
    forwarded: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith(_FORWARD_PREFIX):
            if name[len(_FORWARD_PREFIX) :]:
                forwarded[name[len(_FORWARD_PREFIX) :]] = value
        elif not name.startswith(_PREFIX) and name not in _HOP_BY_HOP:
            out[name] = value
    out.update(forwarded)
    out["accept-encoding"] = "identity"  # the proxy reads what it forwards
    return out


def _decode_properties(headers: dict[str, str]) -> dict[str, Any]:
    """The property headers of a proxied call (Base64 JSON, or plain JSON), decoded; a 400 naming the header."""
    decoded: dict[str, Any] = {}
    for field_name, header in _PROPERTY_HEADERS.items():
        value = headers.get(header.lower())
        if value is not None and value.strip():
            try:
                decoded[field_name] = parse_properties_header(header, value)
            except ValueError as exc:
                raise bad_request("invalid_field_value", str(exc)) from None
    return decoded


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
    """Serves ``/api/v1/proxy/<provider>/...`` for the providers it is given."""

    def __init__(self, svc: Service, upstreams: Upstreams, client: httpx.AsyncClient | None = None) -> None:
        self.svc = svc
        self.upstreams = upstreams
        self._client = client  # made at the first call: creating one (TLS setup) slows service start-up

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(600.0, connect=10.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                follow_redirects=False,
                trust_env=False,  # HTTP(S)_PROXY of the service's environment is not where calls go
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # --- 1 + 2: check and admit ---------------------------------------------------------------
    async def handle(self, request: Request, provider: Provider, path: str) -> Response:
        application = self.svc.authenticate(request)
        xheaders = {k: v for k, v in request.headers.items() if k.startswith(_PREFIX)}
        attr = attribution_from_headers(xheaders, None)
        properties = _decode_properties(xheaders)
        base = self.upstreams.base_url(provider.name, xheaders.get(BASE_URI_HEADER.lower()))
        raw = await request.body()
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
            where = _PROPERTY_HEADERS.get(loc) or ("body.model" if loc == "resource" else loc)
            raise bad_request("invalid_field_value", f"{where}: {first['msg']}") from None
        pending = _Call(application, attr, call, event, base)
        if attr.limit_ids:
            admission = await self.svc.committer.run(lambda: self._admit(pending))
            if admission is not None:
                return json_response(admission, 400)
        else:
            self.svc.ingestor.check_headers(application, attr)  # no limits: nothing in the store to read
        url = f"{base}/{path}"
        if request.url.query:
            url += f"?{request.url.query}"
        upstream = self.client.build_request("POST", url, headers=upstream_headers(request.headers), content=raw)
        pending.started = time.perf_counter()
        try:
            response = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            await self._record(pending, CallResult(), 502, failure=f"upstream unreachable: {type(exc).__name__}")
            raise PayiApiError(
                502, "provider_error", f"the upstream {base} could not be reached: {type(exc).__name__}"
            ) from None
        except BaseException:
            await self._release(pending)
            raise
        content_type = response.headers.get("content-type", "")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _RESPONSE_DROP}
        if response.status_code < 300 and content_type.startswith("text/event-stream"):
            return StreamingResponse(
                self._stream(pending, provider, response),
                status_code=response.status_code,
                headers=headers,
                media_type=None,
            )
        try:
            content = await response.aread()
        except BaseException:
            await self._release(pending)
            raise
        finally:
            await response.aclose()
        return await self._answer(pending, provider, response.status_code, content, headers)

    def _admit(self, pending: _Call) -> dict[str, Any] | None:
        """On the writer thread: check the headers, then reserve the worst case against the block
        limits; None when admitted, else the body of the refusal."""
        svc, app, attr, call = self.svc, pending.application, pending.attr, pending.call
        attr.block_limits_allowed = True
        svc.ingestor.check_headers(app, attr)
        worst = WorstCase(
            call.category, call.model, call.input_bound, call.output_bound, attr.price_as_category,
            attr.price_as_resource, attr.resource_scope,
        )
        admission = admission_.reserve(svc, app, attr.limit_ids, worst)
        if admission.held:
            pending.reservation_id = admission.reservation_id
        if admission.admitted:
            return None
        return admission_.refusal(
            svc, app, attr.limit_ids, admission,
            use_case_name=attr.use_case_name, user_id=attr.user_id, account_name=attr.account_name,
        )

    # --- 3: answer ------------------------------------------------------------------------------
    async def _answer(
        self, pending: _Call, provider: Provider, status: int, content: bytes, headers: dict[str, str]
    ) -> Response:
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
        return Response(content, status_code=status, headers=headers)

    async def _stream(self, pending: _Call, provider: Provider, response: httpx.Response) -> AsyncIterator[bytes]:
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
                async for chunk in response.aiter_bytes():
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
            except httpx.HTTPError as exc:
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
                yield data_event({"xproxy_result": await self._record(pending, reader.result, response.status_code)})
            completed = True
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
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

        pending.recorded = await self.svc.committer.run(work)
        pending.reservation_id = None
        return pending.recorded

    async def _release(self, pending: _Call) -> None:
        reservation, app = pending.reservation_id, pending.application
        if reservation is None:
            return
        pending.reservation_id = None
        with anyio.CancelScope(shield=True):
            await self.svc.committer.run(lambda: self.svc.store.release_reservation(app.id, reservation))


def _resource(model: str | None, requested: str | None) -> str | None:
    if model is None or P.text_problem(model) is not None:
        return requested
    return model
