"""Custom resources: versioned per-unit prices by (category, resource), organization-wide as in Pay-i."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from payi_otel.service.store.connection import StoreBase
from payi_otel.service.store.records import StoreError, dumps

_COLUMNS = "resource_id, category, resource, scope, units, max_input_units, max_output_units, max_total_units, start_ms"


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    resource_id: str
    category: str
    resource: str
    scope: str | None
    units: dict[str, dict[str, float | None]]
    max_input_units: int | None
    max_output_units: int | None
    max_total_units: int | None
    start_ms: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ResourceVersion:
        rid, category, resource, scope, units, max_in, max_out, max_total, start = row
        return cls(rid, category, resource, scope, orjson.loads(units), max_in, max_out, max_total, start)


def _not_found(what: str) -> StoreError:
    return StoreError(f"{what} does not exist", "category_resource_not_found")


class CatalogStore(StoreBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (category, resource) -> versions by start: pricing reads this on every event of a custom resource
        self._custom: dict[tuple[str, str], list[ResourceVersion]] = {}
        super().__init__(*args, **kwargs)

    def _forget_cached(self) -> None:
        super()._forget_cached()
        self._custom.clear()

    def create_resource_version(
        self,
        version: ResourceVersion,
        now_ms: int,
    ) -> ResourceVersion:
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM custom_resources WHERE resource_id = ?", (version.resource_id,)).fetchone():
                raise StoreError(f"resource_id {version.resource_id!r} already exists", "invalid_resource_id")
            c.execute(
                f"INSERT INTO custom_resources ({_COLUMNS}, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version.resource_id,
                    version.category,
                    version.resource,
                    version.scope,
                    dumps(version.units),
                    version.max_input_units,
                    version.max_output_units,
                    version.max_total_units,
                    version.start_ms,
                    now_ms,
                ),
            )
            self._custom.pop((version.category, version.resource), None)
            self._cached_data_changed()
        return version

    def resource_versions(self, category: str, resource: str) -> list[ResourceVersion]:
        """Every version of a custom resource, oldest start first."""
        if not self._conn.in_transaction:
            self._check_cached()
        else:
            self._cache_usable()
        key = (category, resource)
        found = self._custom.get(key)
        if found is None:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM custom_resources WHERE category = ? AND resource = ?"
                    " ORDER BY start_ms, created_ms",
                    key,
                ).fetchall()
            found = self._custom[key] = [ResourceVersion.from_row(r) for r in rows]
        return found

    def custom_price_version(
        self, category: str, resource: str | None, when_ms: int, scope: str | None
    ) -> ResourceVersion | None:
        """The version of a custom resource in force at ``when_ms`` for ``scope`` (or for any scope)."""
        if not resource:
            return None
        versions = self.resource_versions(category, resource)
        if not versions:
            return None
        best: ResourceVersion | None = None
        for v in versions:
            if v.start_ms > when_ms:
                break
            if v.scope == scope or (v.scope is None and (best is None or best.scope is None)):
                best = v
        return best

    def custom_categories(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT category FROM custom_resources ORDER BY 1")]

    def custom_resource_names(self, category: str) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._conn.execute(
                    "SELECT DISTINCT resource FROM custom_resources WHERE category = ? ORDER BY 1", (category,)
                )
            ]

    def delete_resource_versions(
        self, category: str, resource: str | None = None, resource_id: str | None = None
    ) -> list[ResourceVersion]:
        """Delete a whole category, one resource (all versions) or one version; returns what was deleted."""
        where, params = ["category = ?"], [category]
        if resource is not None:
            where.append("resource = ?")
            params.append(resource)
        if resource_id is not None:
            where.append("resource_id = ?")
            params.append(resource_id)
        condition = " AND ".join(where)
        with self.transaction() as c:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM custom_resources WHERE {condition} ORDER BY resource, start_ms", params
            ).fetchall()
            if not rows:
                raise _not_found(" / ".join(params))
            c.execute(f"DELETE FROM custom_resources WHERE {condition}", params)
            self._custom.clear()
            self._cached_data_changed()
        return [ResourceVersion.from_row(r) for r in rows]
