"""Use cases: definitions (versions, limit_config), instances (explicit or on first sight), properties.

Their KPIs and scores are in :mod:`.kpis`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from payi_otel.service.store.limit_spend import LimitsStore
from payi_otel.service.store.records import StoreError, dumps, merge_properties, new_id

INSTANCE_COLUMNS = ("application_id", "use_case_id", "name", "version", "properties", "created_ms", "limit_id")
INSERT_INSTANCE = (
    f"INSERT INTO use_case_instances ({', '.join(INSTANCE_COLUMNS)}) VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))})"
)
_DEFINITION = (
    "SELECT name, description, version, logging_enabled, limit_config, created_ms, updated_ms"
    " FROM use_case_definitions WHERE application_id = ?"
)


@dataclass(frozen=True, slots=True)
class DefinitionRecord:
    name: str
    description: str | None
    version: int
    logging_enabled: bool | None
    limit_config: dict[str, Any] | None
    created_ms: int
    updated_ms: int | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> DefinitionRecord:
        name, description, version, logging, config, created, updated = row
        return cls(
            name,
            description,
            version,
            None if logging is None else bool(logging),
            orjson.loads(config) if config else None,
            created,
            updated,
        )


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    use_case_id: str
    use_case_name: str
    version: int
    properties: dict[str, str]
    created_ms: int
    limit_id: str | None


def _not_found(name: str) -> StoreError:
    return StoreError(f"use case {name!r} does not exist in this application", "use_case_not_found")


class UseCasesStore(LimitsStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (application, name) -> definition: only this process changes definitions while it runs
        # (the cache is dropped on every rollback, which may have undone an insert)
        self._definitions: dict[tuple[int, str], DefinitionRecord] = {}
        super().__init__(*args, **kwargs)

    def _forget_cached(self) -> None:
        super()._forget_cached()
        self._definitions.clear()

    # --- definitions -------------------------------------------------------------------------
    def definition(self, application_id: int, name: str) -> DefinitionRecord | None:
        """The definition as the caller may see it: writes see their own transaction's (cached for the
        ingest path), other reads the committed one."""
        writing = self.in_write()
        if writing:
            self._cache_usable()
        found = self._definitions.get((application_id, name)) if writing else None
        if found is None:
            rows = self.read_rows(_DEFINITION + " AND name = ?", (application_id, name))
            if not rows:
                return None
            found = DefinitionRecord.from_row(rows[0])
            if writing:
                self._definitions[(application_id, name)] = found
        return found

    def definition_or_raise(self, application_id: int, name: str) -> DefinitionRecord:
        found = self.definition(application_id, name)
        if found is None:
            raise _not_found(name)
        return found

    def create_definition(
        self,
        application_id: int,
        name: str,
        description: str,
        limit_config: dict[str, Any] | None,
        logging_enabled: bool | None,
        now_ms: int,
    ) -> DefinitionRecord:
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO use_case_definitions (application_id, name, version, description, created_ms,"
                    " logging_enabled, limit_config, updated_ms) VALUES (?, ?, 1, ?, ?, ?, ?, ?)",
                    (
                        application_id,
                        name,
                        description,
                        now_ms,
                        logging_enabled,
                        dumps(limit_config) if limit_config else None,
                        now_ms,
                    ),
                )
            except self.integrity_errors:
                raise StoreError(f"use case {name!r} already exists", "use_case_already_exists") from None
            self._definitions.pop((application_id, name), None)
            self._cached_data_changed()
        return self.definition_or_raise(application_id, name)

    def list_definitions(
        self, application_id: int, *, name: str | None, ascending: bool, after: tuple[int, str] | None, count: int
    ) -> list[DefinitionRecord]:
        sql, params = keyset(_DEFINITION, application_id, "name", name, ascending, after, count)
        return [DefinitionRecord.from_row(r) for r in self.read_rows(sql, params)]

    def update_definition(
        self, application_id: int, name: str, changes: dict[str, Any], now_ms: int
    ) -> DefinitionRecord:
        """Change ``description``, ``logging_enabled`` and/or ``limit_config`` (None removes it); same version."""
        self.definition_or_raise(application_id, name)
        sets = ["updated_ms = ?"]
        params: list[Any] = [now_ms]
        for column, value in changes.items():
            sets.append(f"{column} = ?")
            params.append(dumps(value) if column == "limit_config" and value is not None else value)
        with self.transaction() as c:
            c.execute(
                f"UPDATE use_case_definitions SET {', '.join(sets)} WHERE application_id = ? AND name = ?",
                (*params, application_id, name),
            )
            self._definitions.pop((application_id, name), None)
            self._cached_data_changed()
        return self.definition_or_raise(application_id, name)

    def increment_version(self, application_id: int, name: str, now_ms: int) -> DefinitionRecord:
        self.definition_or_raise(application_id, name)
        with self.transaction() as c:
            c.execute(
                "UPDATE use_case_definitions SET version = version + 1, updated_ms = ? WHERE application_id = ?"
                " AND name = ?",
                (now_ms, application_id, name),
            )
            self._definitions.pop((application_id, name), None)
            self._cached_data_changed()
        return self.definition_or_raise(application_id, name)

    def delete_definition(self, application_id: int, name: str) -> DefinitionRecord:
        """Delete a definition with its KPIs, instances and their scores (stored requests stay)."""
        found = self.definition_or_raise(application_id, name)
        with self.transaction() as c:
            c.execute(
                "DELETE FROM kpi_scores WHERE application_id = ? AND use_case_id IN"
                " (SELECT use_case_id FROM use_case_instances WHERE application_id = ? AND name = ?)",
                (application_id, application_id, name),
            )
            for table, column in (
                ("use_case_instances", "name"),
                ("kpis", "use_case_name"),
                ("use_case_definitions", "name"),
            ):
                c.execute(f"DELETE FROM {table} WHERE application_id = ? AND {column} = ?", (application_id, name))
            self._definitions.pop((application_id, name), None)
            self._cached_data_changed()
        return found

    # --- instances -----------------------------------------------------------------------------
    def use_case_instance(
        self,
        application_id: int,
        name: str,
        use_case_id: str | None,
        version: int | None,
        properties: dict[str, str | None] | None,
        now_ms: int,
        new_instances: list[tuple[Any, ...]] | None = None,
    ) -> tuple[str, int, str | None]:
        """Attach to (or create) an instance; creates the definition (version 1) on first sight.

        Returns (instance id, version, the instance's own limit id or None). Every rule is checked
        before anything is written: a version is 1 or more and exists; an instance id is never
        reused under another use case name. An instance with a generated id is new by construction:
        with ``new_instances`` its row is appended there for the batch insert instead of inserted now.
        """
        definition = self.definition(application_id, name)
        latest = definition.version if definition is not None else 1
        if version is not None and not 1 <= version <= latest:
            raise StoreError(
                f"version {version} of use case {name!r} does not exist (versions are 1 to {latest})",
                "invalid_use_case_version",
            )
        existing = None
        if use_case_id is not None:
            existing = self._conn.execute(
                "SELECT name, properties, limit_id FROM use_case_instances"
                " WHERE application_id = ? AND use_case_id = ?",
                (application_id, use_case_id),
            ).fetchone()
            if existing is not None and existing[0] != name:
                raise StoreError(
                    f"use case instance {use_case_id!r} belongs to use case {existing[0]!r}, not {name!r}",
                    "use_case_instance_not_found",
                )
        if definition is None:
            self._conn.execute(
                "INSERT INTO use_case_definitions (application_id, name, version, created_ms)"
                " VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING",
                (application_id, name, now_ms),
            )
            definition = self.definition_or_raise(application_id, name)
        version = latest if version is None else version
        if existing is not None:
            if properties:
                merged = merge_properties(orjson.loads(existing[1] or "{}"), properties)
                self._conn.execute(
                    "UPDATE use_case_instances SET properties = ? WHERE application_id = ? AND use_case_id = ?",
                    (dumps(merged), application_id, use_case_id),
                )
            return str(use_case_id), version, existing[2]
        generated = use_case_id is None
        use_case_id = new_id() if use_case_id is None else use_case_id
        limit_id = self._instance_limit(application_id, definition, use_case_id, now_ms)
        merged = merge_properties({}, properties)
        row = (application_id, use_case_id, name, version, dumps(merged) if merged else None, now_ms, limit_id)
        if new_instances is not None and generated:
            new_instances.append(row)
        else:
            self._conn.execute(INSERT_INSTANCE, row)
        return use_case_id, version, limit_id

    def _instance_limit(
        self, application_id: int, definition: DefinitionRecord, use_case_id: str, now_ms: int
    ) -> str | None:
        config = definition.limit_config
        if not config:
            return None
        limit = self.create_limit(
            application_id,
            limit_id=new_id(),
            limit_name=f"{definition.name}/{use_case_id}",
            max_=config["max"],
            limit_type=config.get("limit_type") or "allow",
            threshold=config.get("threshold") or 1.0,
            properties=config.get("properties"),
            reset_schedule=None,
            now_ms=now_ms,
        )
        return limit.limit_id

    def create_instance(self, application_id: int, name: str, now_ms: int) -> InstanceRecord:
        self.definition_or_raise(application_id, name)
        with self.transaction():
            use_case_id, _, _ = self.use_case_instance(application_id, name, None, None, None, now_ms)
        return self.instance(application_id, name, use_case_id)

    def instance(self, application_id: int, name: str, use_case_id: str) -> InstanceRecord:
        rows = self.read_rows(
            "SELECT use_case_id, name, version, properties, created_ms, limit_id FROM use_case_instances"
            " WHERE application_id = ? AND use_case_id = ? AND name = ?",
            (application_id, use_case_id, name),
        )
        if not rows:
            raise StoreError(
                f"use case {name!r} has no instance {use_case_id!r} in this application", "use_case_instance_not_found"
            )
        uid, uname, version, props, created, limit_id = rows[0]
        return InstanceRecord(uid, uname, version, orjson.loads(props) if props else {}, created, limit_id)

    def use_case_instance_properties(self, application_id: int, use_case_id: str) -> dict[str, str] | None:
        row = self._conn.execute(
            "SELECT properties FROM use_case_instances WHERE application_id = ? AND use_case_id = ?",
            (application_id, use_case_id),
        ).fetchone()
        return None if row is None else orjson.loads(row[0] or "{}")

    def update_instance_properties(
        self, application_id: int, name: str, use_case_id: str, properties: dict[str, str | None]
    ) -> InstanceRecord:
        current = self.instance(application_id, name, use_case_id)
        merged = merge_properties(current.properties, properties)
        with self.transaction() as c:
            c.execute(
                "UPDATE use_case_instances SET properties = ? WHERE application_id = ? AND use_case_id = ?",
                (dumps(merged) if merged else None, application_id, use_case_id),
            )
        return self.instance(application_id, name, use_case_id)

    def delete_instance(self, application_id: int, name: str, use_case_id: str) -> InstanceRecord:
        current = self.instance(application_id, name, use_case_id)
        with self.transaction() as c:
            for table in ("kpi_scores", "use_case_instances"):
                c.execute(
                    f"DELETE FROM {table} WHERE application_id = ? AND use_case_id = ?", (application_id, use_case_id)
                )
        return current


def keyset(
    select: str,
    application_id: int,
    name_column: str,
    name: str | None,
    ascending: bool,
    after: tuple[int, str] | None,
    count: int,
    extra: tuple[Any, ...] = (),
) -> tuple[str, list[Any]]:
    """A page query: ``select`` (filtered by application) ordered by (created_ms, name) after a cursor key."""
    sql = [select]
    params: list[Any] = [application_id, *extra]
    if name is not None:
        sql.append(f"AND {name_column} = ?")
        params.append(name)
    if after is not None:
        sql.append(f"AND (created_ms, {name_column}) {'>' if ascending else '<'} (?, ?)")
        params.extend(after)
    direction = "ASC" if ascending else "DESC"
    sql.append(f"ORDER BY created_ms {direction}, {name_column} {direction} LIMIT ?")
    params.append(count)
    return " ".join(sql), params
