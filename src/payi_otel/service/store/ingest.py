"""The writes of ingest: duplicate checks, limit id checks, use case instances, price snapshots, request rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from payi_otel.service.store.records import REQUEST_COLUMNS, StoredRequest, dumps, merge_properties, new_id, now_ms
from payi_otel.service.store.requests import RESULT_BY_DEDUPE_ID, RESULT_BY_PROVIDER_ID, RequestsStore

_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_INSERT_INSTANCE = (
    "INSERT INTO use_case_instances (application_id, use_case_id, name, version, properties, created_ms)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


class IngestStore(RequestsStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._known_resource_ids: set[str] = set()
        self._definition_versions: dict[tuple[int, str], int] = {}
        super().__init__(*args, **kwargs)

    def _forget_cached(self) -> None:
        super()._forget_cached()
        self._definition_versions.clear()

    def find_duplicate(
        self, application_id: int, category: str, provider_response_id: str | None, dedupe_id: str | None
    ) -> StoredRequest | None:
        found = None
        if dedupe_id is not None:
            found = self._stored_request(RESULT_BY_DEDUPE_ID, (application_id, dedupe_id))
        if found is None and provider_response_id is not None:
            found = self._stored_request(RESULT_BY_PROVIDER_ID, (application_id, category, provider_response_id))
        return found

    def use_case_instance(
        self,
        application_id: int,
        name: str,
        use_case_id: str | None,
        version: int | None,
        properties: dict[str, str | None] | None,
        new_instances: list[tuple[Any, ...]] | None = None,
    ) -> tuple[str, int]:
        """Attach to (or create) a use case instance; creates the definition (version 1) on first sight.

        An instance with a generated id is new by construction: with ``new_instances`` its row is
        appended there for :meth:`add_requests` to insert with the batch instead of inserted now.
        """
        c = self._conn
        ts = now_ms()
        latest = self._definition_versions.get((application_id, name))
        if latest is None:
            c.execute(
                "INSERT OR IGNORE INTO use_case_definitions (application_id, name, version, created_ms)"
                " VALUES (?, ?, 1, ?)",
                (application_id, name, ts),
            )
            latest = c.execute(
                "SELECT version FROM use_case_definitions WHERE application_id = ? AND name = ?", (application_id, name)
            ).fetchone()[0]
            # Only this process changes definitions while it runs, so the version can be cached
            # (the cache is dropped on every rollback, which may have undone the insert).
            self._definition_versions[(application_id, name)] = latest
        if version is None:
            version = latest
        use_case_id_generated = use_case_id is None
        if use_case_id is None:
            use_case_id = new_id()
            existing = None
        else:
            existing = c.execute(
                "SELECT properties FROM use_case_instances WHERE application_id = ? AND use_case_id = ?",
                (application_id, use_case_id),
            ).fetchone()
        if existing is None:
            merged = merge_properties({}, properties)
            row = (application_id, use_case_id, name, version, dumps(merged) if merged else None, ts)
            if new_instances is not None and use_case_id_generated:
                new_instances.append(row)
            else:
                c.execute(_INSERT_INSTANCE, row)
        elif properties:
            merged = merge_properties(orjson.loads(existing[0] or "{}"), properties)
            c.execute(
                "UPDATE use_case_instances SET properties = ? WHERE application_id = ? AND use_case_id = ?",
                (dumps(merged), application_id, use_case_id),
            )
        assert version is not None
        return use_case_id, version

    def use_case_instance_properties(self, application_id: int, use_case_id: str) -> dict[str, str] | None:
        row = self._conn.execute(
            "SELECT properties FROM use_case_instances WHERE application_id = ? AND use_case_id = ?",
            (application_id, use_case_id),
        ).fetchone()
        return None if row is None else json.loads(row[0] or "{}")

    def remember_resource_version(self, version: dict[str, Any], category: str, resource: str | None) -> None:
        rid = version["resource_id"]
        if rid in self._known_resource_ids:
            return
        self._conn.execute(
            "INSERT OR IGNORE INTO resource_versions (resource_id, source, category, resource, provider, model, prices)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, version["source"], category, resource, version["provider"], version["model"], version["prices"]),
        )
        self._known_resource_ids.add(rid)

    def add_requests(self, rows: list[tuple[Any, ...]], new_instances: Sequence[tuple[Any, ...]] = ()) -> None:
        """Insert request rows (values in ``REQUEST_COLUMNS`` order) and deferred use case instances."""
        if new_instances:
            self._conn.executemany(_INSERT_INSTANCE, new_instances)
        if rows:
            self._conn.executemany(_INSERT_REQUEST, rows)
