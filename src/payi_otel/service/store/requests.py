"""Stored requests: their results (by request id or provider response id) and their properties."""

from __future__ import annotations

import json
from typing import Any

from payi_otel.service.store.connection import StoreBase
from payi_otel.service.store.records import RESULT_COLUMNS, StoredRequest, dumps, merge_properties

_SELECT_RESULT = f"SELECT {RESULT_COLUMNS} FROM requests WHERE application_id = ? AND "
RESULT_BY_DEDUPE_ID = _SELECT_RESULT + "dedupe_id = ?"
RESULT_BY_REQUEST_ID = _SELECT_RESULT + "request_id = ?"
RESULT_BY_PROVIDER_ID = _SELECT_RESULT + "category = ? AND provider_response_id = ?"


class RequestsStore(StoreBase):
    def _stored_request(self, sql: str, params: tuple[Any, ...]) -> StoredRequest | None:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else StoredRequest.from_row(row)

    def request_result(
        self,
        application_id: int,
        request_id: str | None = None,
        category: str | None = None,
        provider_response_id: str | None = None,
    ) -> StoredRequest | None:
        """A stored request of this application, by request id or by (category, provider response id).

        Reads committed data without waiting for a write in progress.
        """
        if request_id is not None:
            row = self.read_one(RESULT_BY_REQUEST_ID, (application_id, request_id))
        else:
            row = self.read_one(RESULT_BY_PROVIDER_ID, (application_id, category, provider_response_id))
        return None if row is None else StoredRequest.from_row(row)

    def request_properties(self, application_id: int, request_id: str) -> dict[str, str] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT properties FROM requests WHERE application_id = ? AND request_id = ?",
                (application_id, request_id),
            ).fetchone()
        return None if row is None else json.loads(row[0] or "{}")

    def update_request_properties(
        self, application_id: int, request_id: str, properties: dict[str, str | None]
    ) -> bool:
        """Merge ``properties`` into a request's (a None value deletes the key); False if not found."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT properties FROM requests WHERE application_id = ? AND request_id = ?",
                (application_id, request_id),
            ).fetchone()
            if row is None:
                return False
            merged = merge_properties(json.loads(row[0] or "{}"), properties)
            c.execute(
                "UPDATE requests SET properties = ? WHERE application_id = ? AND request_id = ?",
                (dumps(merged), application_id, request_id),
            )
        return True
