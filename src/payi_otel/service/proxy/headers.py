"""What the proxy reads from a call's request headers, and the headers it forwards to the provider.

The ``xProxy-*`` headers are Pay-i's (read like a single ingest's; properties arrive Base64-encoded JSON,
as Pay-i's proxy takes them); the provider gets every other header but hop-by-hop ones, and
``xProxy-Forward-<Name>`` as ``<Name>``.
"""

from __future__ import annotations

from typing import Any

from payi_otel import protocol as P
from payi_otel.context_validation import parse_properties_header
from payi_otel.service.errors import bad_request

__all__ = ["API_KEY", "PROPERTY_HEADERS", "decode_properties", "read_headers"]

_PREFIX_BYTES = P.HEADER_PREFIX.lower().encode()
_FORWARD_PREFIX_BYTES = _PREFIX_BYTES + b"forward-"
API_KEY = P.API_KEY.lower()
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
    }
)
# event field -> header
PROPERTY_HEADERS = {
    "properties": P.PROPERTIES_HEADERS["request_properties"],
    "use_case_properties": P.PROPERTIES_HEADERS["use_case_properties"],
}


def read_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """The ``xProxy-*`` headers of a request (names lower-cased; the first of a repeated one, as every
    route reads them) and the headers the provider gets: no ``xProxy-*`` (but ``xProxy-Forward-<Name>``
    as ``<Name>``), no hop-by-hop ones."""
    xheaders: dict[str, str] = {}
    out: list[tuple[bytes, bytes]] = []
    forwarded: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        if name.startswith(_PREFIX_BYTES):
            if name.startswith(_FORWARD_PREFIX_BYTES):
                if name[len(_FORWARD_PREFIX_BYTES) :]:
                    forwarded.append((name[len(_FORWARD_PREFIX_BYTES) :], value))
            else:
                xheaders.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        elif name not in _HOP_BY_HOP:
            out.append((name, value))
    if forwarded:
        names = {name for name, _ in forwarded}
        out = [item for item in out if item[0] not in names] + forwarded
    out.append((b"accept-encoding", b"identity"))  # the proxy reads what it forwards
    return xheaders, out


def decode_properties(headers: dict[str, str]) -> dict[str, Any]:
    """The property headers of a proxied call (Base64 JSON, or plain JSON), decoded; a 400 naming the header."""
    decoded: dict[str, Any] = {}
    for field_name, header in PROPERTY_HEADERS.items():
        value = headers.get(header.lower())
        if value is not None and value.strip():
            try:
                decoded[field_name] = parse_properties_header(header, value)
            except ValueError as exc:
                raise bad_request("invalid_field_value", str(exc)) from None
    return decoded
