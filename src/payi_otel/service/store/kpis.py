"""KPIs of use cases: definitions per use case, and each instance's scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payi_otel.service.store.records import StoreError
from payi_otel.service.store.use_cases import UseCasesStore, keyset

_KPI = "SELECT name, description, kpi_type, goal, created_ms, updated_ms FROM kpis WHERE application_id = ?"


@dataclass(frozen=True, slots=True)
class KpiRecord:
    name: str
    description: str
    kpi_type: str
    goal: float
    created_ms: int
    updated_ms: int


class KpisStore(UseCasesStore):
    """Use cases with their KPIs."""

    def create_kpi(
        self, application_id: int, use_case: str, name: str, description: str, kpi_type: str, goal: float, now_ms: int
    ) -> KpiRecord:
        self.definition_or_raise(application_id, use_case)
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO kpis (application_id, use_case_name, name, description, kpi_type, goal, created_ms,"
                    " updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (application_id, use_case, name, description, kpi_type, goal, now_ms, now_ms),
                )
            except self.integrity_errors:
                raise StoreError(f"use case {use_case!r} already has a KPI {name!r}", "kpi_already_exists") from None
        return self.kpi(application_id, use_case, name)

    def kpi(self, application_id: int, use_case: str, name: str) -> KpiRecord:
        self.definition_or_raise(application_id, use_case)
        rows = self.read_rows(_KPI + " AND use_case_name = ? AND name = ?", (application_id, use_case, name))
        if not rows:
            raise StoreError(f"use case {use_case!r} has no KPI {name!r}", "kpi_not_found")
        return KpiRecord(*rows[0])

    def list_kpis(
        self,
        application_id: int,
        use_case: str,
        *,
        name: str | None,
        ascending: bool,
        after: tuple[int, str] | None,
        count: int,
    ) -> list[KpiRecord]:
        self.definition_or_raise(application_id, use_case)
        sql, params = keyset(
            _KPI + " AND use_case_name = ?", application_id, "name", name, ascending, after, count, (use_case,)
        )
        return [KpiRecord(*r) for r in self.read_rows(sql, params)]

    def update_kpi(
        self, application_id: int, use_case: str, name: str, changes: dict[str, Any], now_ms: int
    ) -> KpiRecord:
        self.kpi(application_id, use_case, name)
        sets = ["updated_ms = ?", *(f"{column} = ?" for column in changes)]
        with self.transaction() as c:
            c.execute(
                f"UPDATE kpis SET {', '.join(sets)} WHERE application_id = ? AND use_case_name = ? AND name = ?",
                (now_ms, *changes.values(), application_id, use_case, name),
            )
        return self.kpi(application_id, use_case, name)

    def delete_kpi(self, application_id: int, use_case: str, name: str) -> KpiRecord:
        found = self.kpi(application_id, use_case, name)
        with self.transaction() as c:
            c.execute(
                "DELETE FROM kpi_scores WHERE application_id = ? AND kpi_name = ? AND use_case_id IN"
                " (SELECT use_case_id FROM use_case_instances WHERE application_id = ? AND name = ?)",
                (application_id, name, application_id, use_case),
            )
            c.execute(
                "DELETE FROM kpis WHERE application_id = ? AND use_case_name = ? AND name = ?",
                (application_id, use_case, name),
            )
        return found

    def set_kpi_score(
        self, application_id: int, use_case_id: str, kpi_name: str, score: float | None, now_ms: int
    ) -> None:
        """Set (or with None, clear) an instance's score of a KPI."""
        with self.transaction() as c:
            if score is None:
                c.execute(
                    "DELETE FROM kpi_scores WHERE application_id = ? AND use_case_id = ? AND kpi_name = ?",
                    (application_id, use_case_id, kpi_name),
                )
                return
            c.execute(
                "INSERT INTO kpi_scores (application_id, use_case_id, kpi_name, score, created_ms, updated_ms)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (application_id, use_case_id, kpi_name)"
                " DO UPDATE SET score = excluded.score, updated_ms = excluded.updated_ms",
                (application_id, use_case_id, kpi_name, score, now_ms, now_ms),
            )

    def kpi_scores(
        self,
        application_id: int,
        use_case: str,
        use_case_id: str,
        *,
        name: str | None,
        ascending: bool,
        after: tuple[int, str] | None,
        count: int,
    ) -> list[tuple[KpiRecord, float, int, int]]:
        """(KPI, score, created_ms, updated_ms) of an instance's scored KPIs, ordered by score creation time."""
        self.instance(application_id, use_case, use_case_id)
        base = (
            "SELECT k.name, k.description, k.kpi_type, k.goal, k.created_ms, k.updated_ms, s.score, s.created_ms,"
            " s.updated_ms FROM kpi_scores s JOIN kpis k ON k.application_id = s.application_id AND k.name = s.kpi_name"
            " AND k.use_case_name = ? WHERE s.application_id = ? AND s.use_case_id = ?"
        )
        params: list[Any] = [use_case, application_id, use_case_id]
        if name is not None:
            base += " AND s.kpi_name = ?"
            params.append(name)
        if after is not None:
            base += " AND (s.created_ms, s.kpi_name) " + (">" if ascending else "<") + " (?, ?)"
            params.extend(after)
        direction = "ASC" if ascending else "DESC"
        base += f" ORDER BY s.created_ms {direction}, s.kpi_name {direction} LIMIT ?"
        params.append(count)
        return [(KpiRecord(*r[:6]), r[6], r[7], r[8]) for r in self.read_rows(base, params)]
