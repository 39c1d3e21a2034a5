"""What the store hands out (applications, stored requests), its error, ids and small JSON helpers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from random import getrandbits as _random_bits
from typing import Any

import orjson

DB_FILE = "payi.db"
DEFAULT_NAME = "default"

# Column order of a request row (see Store.add_requests).
REQUEST_COLUMNS = (
    "request_id",
    "application_id",
    "event_ms",
    "ingest_ms",
    "category",
    "resource",
    "resource_id",
    "provider_response_id",
    "dedupe_id",
    "use_case_name",
    "use_case_id",
    "use_case_version",
    "use_case_step",
    "user_id",
    "account_name",
    "resource_scope",
    "http_status_code",
    "failed",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "units",
    "cost_input",
    "cost_output",
    "cost_total",
    "unpriced_reason",
    "limit_states",
    "properties",
    "provider_data",
    "unknown_units",
    "request_tags",
)
# What a stored request's xproxy_result is rebuilt from (order of StoredRequest's fields).
RESULT_COLUMNS = (
    "request_id, event_ms, ingest_ms, use_case_name, use_case_id, use_case_version, use_case_step, user_id,"
    " account_name, resource_id, cost_input, cost_output, cost_total, unpriced_reason, limit_states, unknown_units,"
    " request_tags"
)


class StoreError(Exception):
    """A management operation on the store was refused; the message says why, ``code`` which rule (API code)."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class CheckFirst(Exception):  # not an error: the work is run again
    """Work done ahead of its checks (limits counted without a check, cached data used before the cache
    generation was known) would not stand them: the caller undoes it (a savepoint) and runs it again with
    the checks first."""


class NoStoreError(StoreError):
    """The data directory holds no store (and was not to get one)."""


@dataclass(frozen=True, slots=True)
class Application:
    id: int
    name: str
    group: str


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """What a request's ``xproxy_result`` is made of (cost fields are None when it was not priced)."""

    request_id: str
    event_ms: int
    ingest_ms: int
    use_case_name: str | None
    use_case_id: str | None
    use_case_version: int | None
    use_case_step: str | None
    user_id: str | None
    account_name: str | None
    resource_id: str | None
    cost_input: float | None
    cost_output: float | None
    cost_total: float | None
    unpriced_reason: str | None
    limits: dict[str, str]  # limit id -> state of the limit after this request
    unknown_units: dict[str, dict[str, int]]
    request_tags: list[str]

    @classmethod
    def from_request_row(cls, row: tuple[Any, ...]) -> StoredRequest:
        """From a row as given to :meth:`Store.add_requests` (values in ``REQUEST_COLUMNS`` order)."""
        return cls.from_row(tuple(row[i] for i in _RESULT_INDEXES))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredRequest:
        """From a row of ``RESULT_COLUMNS``."""
        *head, limits, unknown, tags = row
        return cls(  # type: ignore[call-arg]
            *head,
            orjson.loads(limits) if limits else {},
            orjson.loads(unknown) if unknown else {},
            orjson.loads(tags) if tags else [],
        )


_RESULT_INDEXES = tuple(REQUEST_COLUMNS.index(c.strip()) for c in RESULT_COLUMNS.split(","))


def now_ms() -> int:
    return int(time.time() * 1000)


_VERSION = 0x7 << 76  # version 7, after the 48 bits of milliseconds
_VARIANT = 0x8 << 60  # RFC 4122 variant bits (10) on top of the last 64 bits
_RAND_B = (1 << 62) - 1


def new_id() -> str:
    """A time-ordered UUID (version 7 layout): ids sort by creation, so index inserts append.

    Ids identify, they are not secrets, so the fast non-cryptographic generator is enough.
    """
    rand = _random_bits(74)
    h = f"{(time.time_ns() // 1_000_000) << 80 | _VERSION | (rand >> 62) << 64 | _VARIANT | (rand & _RAND_B):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def merge_properties(current: dict[str, str], update: dict[str, str | None] | None) -> dict[str, str]:
    """``current`` updated with ``update``; a None value deletes the key."""
    merged = dict(current)
    for k, v in (update or {}).items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
