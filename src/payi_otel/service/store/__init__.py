"""The local service's store: the one package that owns SQL.

One interface (:class:`Store`) assembled from one module per area, over the connection and
transaction handling of :mod:`.connection` and the schema of :mod:`.schema`.

Tables: ``groups`` > ``applications`` > ``api_keys`` (two slots, SHA-256 digests only);
``requests`` (one row per ingested event: attribution, units and cost in columns, from which the
``xproxy_result`` is rebuilt on read, so rows stay small and bulk inserts fast);
``use_case_definitions`` / ``use_case_instances``; ``resource_versions`` (the price snapshot behind
each ``resource_id``); ``limits`` (per application; ingest checks limit ids against it);
``limit_reservations`` (worst-case cost held by calls in flight against block limits);
``otlp_spans`` (GenAI spans received over OTLP and the request each one's call became).
"""

from __future__ import annotations

from payi_otel.service.store.apps import AppsStore
from payi_otel.service.store.catalog import CatalogStore, ResourceVersion
from payi_otel.service.store.connection import StoreBusy, UnitUndone
from payi_otel.service.store.ingest import IngestStore, StoredKeys
from payi_otel.service.store.kpis import KpiRecord, KpisStore
from payi_otel.service.store.limits import HistoryRecord, LimitRecord
from payi_otel.service.store.otlp import OtlpSpansStore
from payi_otel.service.store.records import (
    DB_FILE,
    DEFAULT_NAME,
    REQUEST_COLUMNS,
    Application,
    CheckFirst,
    NoStoreError,
    StoredRequest,
    StoreError,
    new_id,
    now_ms,
)
from payi_otel.service.store.reports import MULTI_VALUED, REPORT_DIMENSIONS, STATUSES, ReportQuery, ReportsStore
from payi_otel.service.store.reservations import Admission, ReservationsStore
from payi_otel.service.store.schema import SCHEMA_VERSION
from payi_otel.service.store.sqlite_file import WAL_RESTART_FRAMES
from payi_otel.service.store.use_cases import DefinitionRecord, InstanceRecord

__all__ = [
    "DB_FILE",
    "DEFAULT_NAME",
    "MULTI_VALUED",
    "REPORT_DIMENSIONS",
    "REQUEST_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "WAL_RESTART_FRAMES",
    "Admission",
    "Application",
    "CheckFirst",
    "DefinitionRecord",
    "HistoryRecord",
    "InstanceRecord",
    "KpiRecord",
    "LimitRecord",
    "NoStoreError",
    "ReportQuery",
    "ResourceVersion",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoredKeys",
    "StoredRequest",
    "UnitUndone",
    "new_id",
    "now_ms",
]


class Store(AppsStore, IngestStore, KpisStore, CatalogStore, OtlpSpansStore, ReportsStore, ReservationsStore):
    """All persistent state of the local service."""
