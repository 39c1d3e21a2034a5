"""Replay recorded provider HTTP traffic (VCR.py YAML cassettes) as an httpx or httpx2 transport.

Use it to run a real provider SDK with no network::

    from payi_otel.testing.replay import Cassette
    cassette = Cassette.load("tests/cassettes/.../test_chat.yaml")
    client = openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=cassette.transport("httpx2")))

Each request is answered with the next unused recorded interaction whose method and URL path match
(query strings are ignored: Azure ``api-version`` values differ between recordings). Bodies stored as
plain strings, ``!!binary`` blobs (gzip kept with its ``content-encoding``) or pydantic-ai's
``parsed_body`` mappings are all served byte-for-byte equivalent. A request with no matching
interaction gets a ``ReplayMiss`` error naming the method and path.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_DROP_HEADERS = frozenset({"content-length", "transfer-encoding"})


class ReplayMiss(LookupError):
    """No recorded interaction answers this request."""


@dataclass(frozen=True, slots=True)
class Interaction:
    method: str
    uri: str
    path: str
    request_body: Any  # decoded JSON when possible, else raw text/bytes
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        """The response body as JSON (gzip undone)."""
        return json.loads(_decoded(self))

    def sse_events(self) -> list[Any]:
        """The ``data:`` payloads of an SSE response body, as JSON (``[DONE]`` skipped)."""
        events = []
        for line in _decoded(self).decode("utf-8").splitlines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                if payload and payload != "[DONE]":
                    events.append(json.loads(payload))
        return events

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def _decoded(interaction: Interaction) -> bytes:
    if (interaction.header("content-encoding") or "").lower() == "gzip" or interaction.body[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(interaction.body)
    return interaction.body


def _yaml_loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: Any, _suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", any_tag)
    Loader.add_multi_constructor("!", any_tag)
    return Loader


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _interaction(raw: dict[str, Any]) -> Interaction:
    req, resp = raw["request"], raw["response"]
    parsed = "parsed_body" in resp
    body = _body_bytes(resp["parsed_body"] if parsed else (resp.get("body") or {}).get("string"))
    headers: list[tuple[str, str]] = []
    for name, values in (resp.get("headers") or {}).items():
        lname = name.lower()
        if lname in _DROP_HEADERS or (parsed and lname == "content-encoding"):
            continue
        for value in values if isinstance(values, list) else [values]:
            headers.append((name, str(value)))
    req_body: Any = req.get("parsed_body", req.get("body"))
    if isinstance(req_body, dict) and "string" in req_body:
        req_body = req_body["string"]
    if isinstance(req_body, (str, bytes)):
        with contextlib.suppress(ValueError):
            req_body = json.loads(req_body)
    status = resp.get("status") or {}
    return Interaction(
        method=str(req.get("method", "GET")).upper(),
        uri=req["uri"],
        path=urlsplit(req["uri"]).path,
        request_body=req_body,
        status=int(status.get("code", 200)) if isinstance(status, dict) else int(status),
        headers=tuple(headers),
        body=body,
    )


class Cassette:
    """The interactions of one cassette file, served in order."""

    def __init__(self, interactions: list[Interaction], name: str = "") -> None:
        self.interactions = interactions
        self.name = name
        self._used: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        import yaml

        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_yaml_loader())
        return cls([_interaction(i) for i in data.get("interactions", [])], name=path.name)

    def next_for(self, method: str, path: str) -> Interaction:
        with self._lock:
            for i, interaction in enumerate(self.interactions):
                if i not in self._used and interaction.method == method and _same_path(interaction.path, path):
                    self._used.add(i)
                    return interaction
        raise ReplayMiss(f"{self.name}: no unused recorded interaction for {method} {path}")

    def transport(self, library: str = "httpx2") -> Any:
        """A sync+async transport of ``library`` ("httpx" or "httpx2") answering from this cassette."""
        return make_transport(self, library)


def _same_path(recorded: str, requested: str) -> bool:
    return recorded.rstrip("/") == requested.rstrip("/")


_transport_classes: dict[str, type] = {}


def make_transport(cassette: Cassette, library: str = "httpx2") -> Any:
    cls = _transport_classes.get(library)
    if cls is None:
        cls = _transport_classes[library] = _transport_class(importlib.import_module(library))
    return cls(cassette)


def _transport_class(lib: Any) -> type:
    class ReplayBody(lib.SyncByteStream, lib.AsyncByteStream):  # type: ignore[misc]  # library chosen at run time
        """The recorded body, delivered like a network body (not pre-read; SSE one event at a time)."""

        def __init__(self, body: bytes) -> None:
            if b"\n\ndata:" not in body:
                self.parts = [body]
                return
            self.parts = [p + b"\n\n" for p in body.split(b"\n\n") if p]
            if self.parts and not body.endswith(b"\n\n"):
                self.parts[-1] = self.parts[-1][:-2]  # keep the recorded ending byte for byte

        def __iter__(self) -> Any:
            yield from self.parts

        async def __aiter__(self) -> Any:
            for part in self.parts:
                yield part

    class ReplayTransport(lib.BaseTransport, lib.AsyncBaseTransport):  # type: ignore[misc]  # library chosen at run time
        """Answers requests from a :class:`Cassette` (works with sync and async clients)."""

        def __init__(self, cassette: Cassette) -> None:
            self.cassette = cassette
            self.requests: list[Any] = []

        def _answer(self, request: Any) -> Any:
            self.requests.append(request)
            interaction = self.cassette.next_for(request.method, request.url.path)
            return lib.Response(
                interaction.status,
                headers=list(interaction.headers),
                stream=ReplayBody(interaction.body),
                request=request,
            )

        def handle_request(self, request: Any) -> Any:
            request.read()
            return self._answer(request)

        async def handle_async_request(self, request: Any) -> Any:
            await request.aread()
            return self._answer(request)

    ReplayTransport.__qualname__ = f"ReplayTransport[{lib.__name__}]"
    return ReplayTransport


__all__ = ["Cassette", "Interaction", "ReplayMiss", "make_transport"]
