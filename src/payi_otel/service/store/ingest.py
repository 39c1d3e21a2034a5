"""The writes of ingest: duplicate checks, price snapshots, request rows (with deferred use case instances)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from payi_otel.service.store.records import REQUEST_COLUMNS, StoredRequest
from payi_otel.service.store.requests import RESULT_BY_DEDUPE_ID, RESULT_BY_PROVIDER_ID, RequestsStore
from payi_otel.service.store.use_cases import INSTANCE_COLUMNS


@dataclass(frozen=True, slots=True)
class StoredKeys:
    """The stored requests a batch's events could duplicate, looked up for the whole batch at once."""

    by_provider_id: dict[tuple[str, str], StoredRequest]  # (category, provider response id) ->
    by_dedupe_id: dict[str, StoredRequest]

    def duplicate(self, category: str, provider_response_id: str | None, dedupe_id: str | None) -> StoredRequest | None:
        """As :meth:`IngestStore.find_duplicate`, from what was looked up."""
        found = None
        if dedupe_id is not None:
            found = self.by_dedupe_id.get(dedupe_id)
        if found is None and provider_response_id is not None:
            found = self.by_provider_id.get((category, provider_response_id))
        return found


class IngestStore(RequestsStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._known_resource_ids: set[str] = set()
        super().__init__(*args, **kwargs)

    def _forget_cached(self) -> None:
        super()._forget_cached()
        self._known_resource_ids.clear()  # a rollback may have undone their inserts

    def find_duplicate(
        self, application_id: int, category: str, provider_response_id: str | None, dedupe_id: str | None
    ) -> StoredRequest | None:
        found = None
        if dedupe_id is not None:
            found = self._stored_request(RESULT_BY_DEDUPE_ID, (application_id, dedupe_id))
        if found is None and provider_response_id is not None:
            found = self._stored_request(RESULT_BY_PROVIDER_ID, (application_id, category, provider_response_id))
        return found

    def stored_keys(self, application_id: int, keys: Iterable[tuple[str, str | None, str | None]]) -> StoredKeys | None:
        """The stored requests of this application that events with these keys (category, provider response
        id, dedupe id) could duplicate; None when no event carries an id. Each is the lookup
        :meth:`find_duplicate` makes (by unique index), but PostgreSQL gets them all in one round trip
        instead of one each."""
        provider_keys: set[tuple[str, str]] = set()
        dedupe_ids: set[str] = set()
        for category, provider_id, dedupe_id in keys:
            if provider_id is not None:
                provider_keys.add((category, provider_id))
            if dedupe_id:
                dedupe_ids.add(dedupe_id)
        if not (provider_keys or dedupe_ids):
            return None
        by_key, by_id = list(provider_keys), list(dedupe_ids)
        found = self.query_each(
            [(RESULT_BY_PROVIDER_ID, (application_id, category, provider_id)) for category, provider_id in by_key]
            + [(RESULT_BY_DEDUPE_ID, (application_id, dedupe_id)) for dedupe_id in by_id]
        )
        stored = [StoredRequest.from_row(rows[0]) if rows else None for rows in found]
        by_provider = {key: hit for key, hit in zip(by_key, stored, strict=False) if hit is not None}
        by_dedupe = {key: hit for key, hit in zip(by_id, stored[len(by_key) :], strict=True) if hit is not None}
        return StoredKeys(by_provider, by_dedupe)

    def remember_resource_version(self, version: dict[str, Any], category: str, resource: str | None) -> None:
        rid = version["resource_id"]
        if rid in self._known_resource_ids:
            return
        self._conn.execute(
            "INSERT INTO resource_versions (resource_id, source, category, resource, provider, model, prices)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (rid, version["source"], category, resource, version["provider"], version["model"], version["prices"]),
        )
        self._known_resource_ids.add(rid)

    def add_requests(self, rows: list[tuple[Any, ...]], new_instances: Sequence[tuple[Any, ...]] = ()) -> None:
        """Insert request rows (values in ``REQUEST_COLUMNS`` order) and deferred use case instances."""
        self.insert_rows("use_case_instances", INSTANCE_COLUMNS, new_instances)
        self.insert_rows("requests", REQUEST_COLUMNS, rows)
