"""Where the proxy may forward: one configured upstream per provider, never a host the operator did not allow.

``PAYI_OTEL_UPSTREAM_OPENAI`` and ``PAYI_OTEL_UPSTREAM_ANTHROPIC`` each name one base URL (default
the public API). ``PAYI_OTEL_UPSTREAM_AZURE_OPENAI`` is an allow-list (comma-separated) of Azure
OpenAI endpoints; an entry's host may start with ``*.`` (any one DNS label). A call names its
endpoint in ``xProxy-Provider-BaseUri``, which must match an entry's scheme, host and port; without
the header, an allow-list of one entry without a wildcard is the endpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from payi_otel import protocol as P
from payi_otel.service.errors import PayiApiError

ENV = {
    "openai": "PAYI_OTEL_UPSTREAM_OPENAI",
    "anthropic": "PAYI_OTEL_UPSTREAM_ANTHROPIC",
    "azure.openai": "PAYI_OTEL_UPSTREAM_AZURE_OPENAI",
}
DEFAULTS = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "azure.openai": "https://*.openai.azure.com",
}
BASE_URI_HEADER = "xProxy-Provider-BaseUri"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$|^\[[0-9A-Fa-f:.]+\]$")


class ServiceConfigError(ValueError):
    """A setting of the service (an environment variable) is invalid; the message names it and the rule."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # lower-cased; "*.example.com" matches one more label in front
    port: int
    path: str  # base path without the trailing slash ("" for none)

    def matches(self, other: Origin) -> bool:
        if self.scheme != other.scheme or self.port != other.port:
            return False
        if self.host.startswith("*."):
            suffix = self.host[1:]
            head = other.host[: -len(suffix)] if other.host.endswith(suffix) else ""
            return bool(head) and "." not in head and not other.host.startswith("*")
        return self.host == other.host

    @property
    def url(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path}"


def parse_origin(value: str, source: str, *, wildcard: bool) -> Origin:
    """An ``http(s)://host[:port][/path]`` URL; ServiceConfigError naming ``source`` and the rule otherwise."""
    rule = f"{source} must be an http:// or https:// URL with a host and no user, query or fragment"
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ServiceConfigError(f"{rule}, got {P.preview(value)}") from None
    host = (parts.hostname or "").lower()
    if parts.netloc.startswith("[") and host:
        host = f"[{host}]"
    if (
        parts.scheme not in ("http", "https")
        or not host
        or not _HOST.match(host)
        or parts.username is not None
        or parts.query
        or parts.fragment
        or (host.startswith("*") and not wildcard)
    ):
        raise ServiceConfigError(f"{rule}, got {P.preview(value)}")
    return Origin(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), parts.path.rstrip("/"))


class Upstreams:
    """The upstream of each proxied provider, from the environment (or ``overrides``, same names)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        values = {
            name: (overrides or {}).get(env) or os.environ.get(env) or DEFAULTS[name] for name, env in ENV.items()
        }
        self.openai = parse_origin(values["openai"], ENV["openai"], wildcard=False)
        self.anthropic = parse_origin(values["anthropic"], ENV["anthropic"], wildcard=False)
        entries = [v for v in values["azure.openai"].split(",") if v.strip()]
        self.azure = [parse_origin(v, ENV["azure.openai"], wildcard=True) for v in entries]

    def base_url(self, provider: str, base_uri_header: str | None) -> str:
        """The base URL a call to ``provider`` goes to; a 400 naming the header when it is not allowed."""
        if provider == "openai":
            return self.openai.url
        if provider == "anthropic":
            return self.anthropic.url
        if base_uri_header is None or not base_uri_header.strip():
            fixed = [o for o in self.azure if not o.host.startswith("*.")]
            if len(self.azure) == 1 and fixed:
                return fixed[0].url
            raise PayiApiError(
                400, "invalid_provider_uri", f"{BASE_URI_HEADER} is required: the Azure OpenAI endpoint of the call"
            )
        try:
            wanted = parse_origin(base_uri_header, BASE_URI_HEADER, wildcard=False)
        except ValueError as exc:
            raise PayiApiError(400, "invalid_provider_uri", str(exc)) from None
        if not any(o.matches(wanted) for o in self.azure):
            raise PayiApiError(
                400,
                "invalid_provider_host",
                f"{BASE_URI_HEADER}: {wanted.scheme}://{wanted.host}:{wanted.port} is not an allowed upstream "
                f"(allowed: {', '.join(o.url for o in self.azure)}; set {ENV['azure.openai']})",
            )
        return wanted.url
