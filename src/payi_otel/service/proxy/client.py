"""The proxy's HTTP client to the providers: httpcore's connection pool, kept alive across calls.

httpcore is the transport under httpx; used directly, a forwarded call skips httpx's request and
response models, cookie jar, redirect and auth layers (about half a millisecond per call on a
loopback upstream). Nothing of the client's environment applies (no ``HTTP(S)_PROXY``), no cookie is
kept between callers, redirects are answered to the caller as they are.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncIterator, Callable

import httpcore

# What "the upstream could not be reached, or broke the exchange" raises.
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
_TIMEOUTS = {"connect": 10.0, "read": 600.0, "write": 600.0, "pool": 600.0}


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> tuple[bytes, bytes, int | None, bytes, bytes]:
    """scheme, host, port, path prefix and Host header of a base URL (an allowed upstream's)."""
    url = httpcore.URL(base)
    default = {b"http": 80, b"https": 443}.get(url.scheme)
    host = url.host + (b"" if url.port in (None, default) else b":%d" % url.port)
    return url.scheme, url.host, url.port, url.target.rstrip(b"/"), host


def decoder(headers: list[tuple[bytes, bytes]]) -> Callable[[bytes], bytes] | None:
    """How to read the body of a response with these headers: identity, gzip or deflate (the proxy
    asks for identity); None for another encoding (the body then passes through as it is)."""
    encoding = b""
    for name, value in headers:
        if name.lower() == b"content-encoding":
            encoding = value.strip().lower()
    if encoding in (b"", b"identity"):
        return _identity
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress
    if encoding == b"deflate":
        return zlib.decompressobj().decompress
    return None


def _identity(data: bytes) -> bytes:
    return data


class UpstreamClient:
    """One pool of kept-alive connections to the upstreams, made at the first call (TLS setup slows
    the service's start-up)."""

    def __init__(self) -> None:
        self._pool: httpcore.AsyncConnectionPool | None = None

    @property
    def pool(self) -> httpcore.AsyncConnectionPool:
        if self._pool is None:
            self._pool = httpcore.AsyncConnectionPool(max_connections=256, max_keepalive_connections=64)
        return self._pool

    async def send(
        self, base: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpcore.Response:
        """POST ``body`` to ``<base>/<path>?<query>``; the response's body is read by the caller
        (:func:`chunks`), who closes it."""
        scheme, host, port, prefix, host_header = _origin(base)
        target = prefix + b"/" + path.encode("ascii") + (b"?" + query if query else b"")
        all_headers = [(b"host", host_header), *headers, (b"content-length", str(len(body)).encode())]
        request = httpcore.Request(
            b"POST",
            httpcore.URL(scheme=scheme, host=host, port=port, target=target),
            headers=all_headers,
            content=body,
            extensions={"timeout": _TIMEOUTS},
        )
        return await self.pool.handle_async_request(request)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


async def chunks(response: httpcore.Response, decode: Callable[[bytes], bytes]) -> AsyncIterator[bytes]:
    """The response's body as it arrives, decoded."""
    async for chunk in response.aiter_stream():
        data = decode(chunk)
        if data:
            yield data
