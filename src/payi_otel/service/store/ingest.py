"""The writes of ingest: duplicate checks, price snapshots, request rows (with deferred use case instances)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from payi_otel.service.store.records import REQUEST_COLUMNS, StoredRequest
from payi_otel.service.store.requests import RESULT_BY_DEDUPE_ID, RESULT_BY_PROVIDER_ID, RequestsStore
from payi_otel.service.store.use_cases import INSTANCE_COLUMNS


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
