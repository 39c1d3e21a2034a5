"""The proxy's HTTP client to the providers: aiohttp's client, its connections kept alive across calls.

aiohttp reads responses with its C parser (llhttp): its own work per forwarded call is about a third of
what httpcore's pure-Python HTTP/1.1 (h11) takes. Nothing of the client's environment
applies (no ``HTTP(S)_PROXY``, no ``.netrc``), no cookie is kept between callers, redirects are answered
to the caller as they are, and nothing is added to the caller's headers but ``Host`` and
``Content-Length``. Bodies come as the upstream sent them (the proxy asks for identity and decodes
what it reads itself: :func:`decoder`).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import certifi
from yarl import URL

# What "the upstream could not be reached, or broke the exchange" raises (a timeout too).
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, asyncio.TimeoutError)
# No limit on a whole call (a long stream may take many minutes); 600 s without a byte from the upstream
# (or waiting for a free connection), 10 s to connect.
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=600.0, sock_connect=10.0, sock_read=600.0)
# aiohttp adds these unless the request has them: the provider gets the caller's headers only.
_NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")

Response = aiohttp.ClientResponse


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> tuple[str, str, int | None, str]:
    """scheme, host, port and path prefix of a base URL (an allowed upstream's)."""
    url = URL(base)
    return url.scheme, url.raw_host or "", url.explicit_port, url.raw_path.rstrip("/")


def decoder(headers: tuple[tuple[bytes, bytes], ...]) -> Callable[[bytes], bytes] | None:
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
    """One pool of kept-alive connections to the upstreams, made at the first call (on the event loop
    that serves the calls; TLS setup would slow the service's start-up)."""

    def __init__(self, timeout: aiohttp.ClientTimeout = _TIMEOUT) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = timeout

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=256, ssl=ssl.create_default_context(cafile=certifi.where()), enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_NOT_ADDED,
                trust_env=False,
            )
        return self._session

    async def send(
        self, base: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """POST ``body`` to ``<base>/<path>?<query>`` (``path`` and ``query`` as they came, percent-encoded);
        the response's body is read by the caller (:func:`chunks`), who closes it (:func:`close`)."""
        scheme, host, port, prefix = _origin(base)
        url = URL.build(
            scheme=scheme,
            host=host,
            port=port,
            path=f"{prefix}/{path}",
            query_string=query.decode("latin-1"),
            encoded=True,
        )
        return await self.session.post(
            url,
            data=body,
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            allow_redirects=False,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def chunks(response: Response, decode: Callable[[bytes], bytes]) -> AsyncIterator[bytes]:
    """The response's body as it arrives, decoded (its connection goes back to the pool at its end)."""
    async for chunk in response.content.iter_any():
        data = decode(chunk)
        if data:
            yield data


def close(response: Response) -> None:
    """Done with the response: a body read to its end left the connection in the pool already; one read
    part of the way closes its connection (it cannot carry another call)."""
    response.close()
