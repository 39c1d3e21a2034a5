"""Exporter settings: environment variables, defaults, and their validation.

Every setting comes from the environment (so ``opentelemetry-instrument`` can build the exporter
with no arguments); keyword arguments given in code win over the environment. A bad value raises
:class:`ConfigError` naming the variable and the rule; with ``problems=[...]`` (how the zero-argument
exporter loads) a bad value is reported there instead and its default is used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from payi_otel.settings import parse_bool

__all__ = ["ENV_VARS", "ConfigError", "ExporterConfig"]

DEFAULT_BASE_URL = "https://api.pay-i.com"

# name -> (default shown in docs, meaning); the README's configuration table comes from this.
ENV_VARS: dict[str, tuple[str, str]] = {
    "PAYI_BASE_URL": (DEFAULT_BASE_URL, "Pay-i API (or the local service) the events go to"),
    "PAYI_API_KEY": ("(none)", "application key, sent as xProxy-api-key"),
    "PAYI_INGEST_MODE": ("single", "single: one POST /api/v1/ingest per event; bulk: POST /api/v1/ingest/bulk"),
    "PAYI_EXPORT_TIMEOUT": ("10", "seconds one HTTP request to the API may take"),
    "PAYI_EXPORT_BATCH_SIZE": ("100", "events per spool batch and per bulk request (1-1000)"),
    "PAYI_SPOOL_DIR": ("~/.cache/payi-otel/spool/<hash of base URL>", "directory of the on-disk spool"),
    "PAYI_SPOOL_MAX_BYTES": ("104857600", "spool size bound in bytes; new events are dropped (and counted) beyond it"),
    "PAYI_OFFLINE_FILE": ("(unset)", "write events as JSON Lines to this file instead of sending them"),
    "PAYI_EXPORT_CONTENT": ("true", "false drops message content (provider_request/response_json) from events"),
    "PAYI_SHUTDOWN_TIMEOUT": ("5", "seconds shutdown() keeps delivering; what is left stays spooled"),
    "PAYI_RETRY_INITIAL_BACKOFF": ("0.5", "seconds of the first retry wait; doubles per attempt (full jitter)"),
    "PAYI_RETRY_MAX_BACKOFF": ("60", "upper bound in seconds of the wait between retries"),
    "PAYI_RETRY_MAX_ATTEMPTS": ("8", "server errors (500, ...) one event may get before it is dead-lettered"),
    "PAYI_RETRY_MAX_AGE": ("3600", "seconds after its first server error an event is dead-lettered at the latest"),
}


class ConfigError(ValueError):
    """A setting has a value that breaks its rule; the message names the setting and the rule."""


def _default_spool_dir(base_url: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return Path(cache) / "payi-otel" / "spool" / digest


def _number(name: str, raw: Any, kind: type, low: float, high: float | None = None) -> Any:
    rule = f"must be {'an integer' if kind is int else 'a number'} >= {low}" + (f" and <= {high}" if high else "")
    if kind is float and name.endswith(("TIMEOUT", "BACKOFF")):
        rule = rule.replace("a number", "a number of seconds")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r}: {rule}") from None
    if value != value or value < low or (high is not None and value > high):  # NaN fails too
        raise ConfigError(f"{name}={raw!r}: {rule}")
    return value


def _url(name: str, raw: Any) -> str:
    parts = urlsplit(str(raw))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={raw!r}: must be an http:// or https:// URL with a host")
    return str(raw).rstrip("/")


def _mode(name: str, raw: Any) -> str:
    mode = str(raw).lower()
    if mode not in ("single", "bulk"):
        raise ConfigError(f"{name}={mode!r}: must be 'single' or 'bulk'")
    return mode


def _bool(name: str, raw: Any) -> bool:
    return parse_bool(raw, name, ConfigError)


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    base_url: str
    api_key: str | None
    ingest_mode: str
    timeout: float
    batch_size: int
    spool_dir: Path
    spool_max_bytes: int
    offline_file: Path | None
    export_content: bool
    shutdown_timeout: float
    retry_max_backoff: float
    retry_initial_backoff: float = 0.5
    retry_max_attempts: int = 8
    retry_max_age: float = 3600.0
    extra_headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. a Payi client's default_headers)

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, *, problems: list[str] | None = None, **overrides: Any
    ) -> ExporterConfig:
        """Settings from ``env`` (default ``os.environ``), with non-``None`` ``overrides`` winning.

        Override names are the field names (``base_url``, ``api_key``, ``ingest_mode``, ...). A bad
        value raises :class:`ConfigError`, unless ``problems`` is given: then its message is appended
        there and the setting's default is used."""
        env = os.environ if env is None else env
        unknown = set(overrides) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise TypeError(f"unknown exporter setting(s): {', '.join(sorted(unknown))}")

        def get(field: str, var: str, default: Any) -> tuple[Any, str]:
            if overrides.get(field) is not None:
                return overrides[field], field
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                return default, var
            return raw.strip(), var

        def checked(field: str, var: str, default: Any, check: Any) -> Any:
            raw, name = get(field, var, default)
            try:
                return check(name, raw)
            except ConfigError as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
                return check(var, default)

        base_url = checked("base_url", "PAYI_BASE_URL", DEFAULT_BASE_URL, _url)
        api_key, _ = get("api_key", "PAYI_API_KEY", None)
        mode = checked("ingest_mode", "PAYI_INGEST_MODE", "single", _mode)
        timeout = checked("timeout", "PAYI_EXPORT_TIMEOUT", 10.0, lambda n, r: _number(n, r, float, 0.001))
        batch_size = checked("batch_size", "PAYI_EXPORT_BATCH_SIZE", 100, lambda n, r: _number(n, r, int, 1, 1000))
        spool_max_bytes = checked(
            "spool_max_bytes", "PAYI_SPOOL_MAX_BYTES", 100 * 1024 * 1024, lambda n, r: _number(n, r, int, 1)
        )
        shutdown_timeout = checked(
            "shutdown_timeout", "PAYI_SHUTDOWN_TIMEOUT", 5.0, lambda n, r: _number(n, r, float, 0)
        )
        retry_max_backoff = checked(
            "retry_max_backoff", "PAYI_RETRY_MAX_BACKOFF", 60.0, lambda n, r: _number(n, r, float, 0.01)
        )
        retry_initial_backoff = checked(
            "retry_initial_backoff", "PAYI_RETRY_INITIAL_BACKOFF", 0.5, lambda n, r: _number(n, r, float, 0.001)
        )
        retry_max_attempts = checked(
            "retry_max_attempts", "PAYI_RETRY_MAX_ATTEMPTS", 8, lambda n, r: _number(n, r, int, 1, 1000)
        )
        retry_max_age = checked("retry_max_age", "PAYI_RETRY_MAX_AGE", 3600.0, lambda n, r: _number(n, r, float, 0.001))
        export_content = checked("export_content", "PAYI_EXPORT_CONTENT", True, _bool)

        spool_dir, _ = get("spool_dir", "PAYI_SPOOL_DIR", None)
        spool_dir = Path(spool_dir).expanduser() if spool_dir else _default_spool_dir(base_url)
        offline, _ = get("offline_file", "PAYI_OFFLINE_FILE", None)
        offline_file = Path(offline).expanduser() if offline else None

        return cls(
            base_url=base_url,
            api_key=str(api_key) if api_key else None,
            ingest_mode=mode,
            timeout=timeout,
            batch_size=batch_size,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            offline_file=offline_file,
            export_content=export_content,
            shutdown_timeout=shutdown_timeout,
            retry_max_backoff=retry_max_backoff,
            retry_initial_backoff=retry_initial_backoff,
            retry_max_attempts=retry_max_attempts,
            retry_max_age=retry_max_age,
            extra_headers=tuple(overrides.get("extra_headers") or ()),
        )
