"""The schema of the store (one script for both backends) and its versioned migrations.

The schema is written in SQLite's types; PostgreSQL receives it translated (see :mod:`.dialect`).
Both record the version they are at (SQLite in ``PRAGMA user_version``, PostgreSQL in the table
``schema_version``) and are migrated on start, in one transaction. Migrations below 7 upgrade SQLite
files older than the PostgreSQL backend, which starts at 7; every later migration runs on both
backends (the same script, translated), so it is written in SQL both understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from payi_otel.service.store.dialect import postgres_ddl
from payi_otel.service.store.records import NoStoreError, StoreError

if TYPE_CHECKING:
    from payi_otel.service.store.postgres import PgConnection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    slot INTEGER NOT NULL CHECK (slot IN (1, 2)),
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, slot)
);
CREATE TABLE IF NOT EXISTS limits (
    limit_id TEXT NOT NULL,
    application_id INTEGER NOT NULL REFERENCES applications(id),
    limit_name TEXT NOT NULL,
    max REAL NOT NULL,
    limit_type TEXT NOT NULL DEFAULT 'allow',
    threshold REAL NOT NULL DEFAULT 1.0,
    properties TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    cost_input REAL NOT NULL DEFAULT 0,
    cost_output REAL NOT NULL DEFAULT 0,
    cost_total REAL NOT NULL DEFAULT 0,  -- spend since the last reset
    req_ok INTEGER NOT NULL DEFAULT 0,  -- requests since the last reset, by state
    req_exceeded INTEGER NOT NULL DEFAULT 0,
    req_overrun INTEGER NOT NULL DEFAULT 0,
    req_blocked INTEGER NOT NULL DEFAULT 0,
    req_blocked_external INTEGER NOT NULL DEFAULT 0,
    req_failed INTEGER NOT NULL DEFAULT 0,
    req_total INTEGER NOT NULL DEFAULT 0,
    reset_schedule TEXT,             -- daily | weekly | monthly | ISO 8601 duration; NULL: none
    schedule_anchor_ms INTEGER,      -- start of the first period of a duration schedule
    next_reset_ms INTEGER,           -- when the next scheduled reset is due
    alerted INTEGER NOT NULL DEFAULT 0,  -- alerts raised since the last reset: bit 1 threshold, bit 2 max
    reserved REAL NOT NULL DEFAULT 0,  -- worst-case cost of calls in flight (block limits; see limit_reservations)
    PRIMARY KEY (application_id, limit_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS limits_name ON limits (application_id, limit_name);
CREATE TABLE IF NOT EXISTS limit_history (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL,
    limit_id TEXT NOT NULL,
    limit_name TEXT NOT NULL,
    limit_type TEXT NOT NULL,
    max REAL NOT NULL,
    reset_ms INTEGER NOT NULL,       -- when the reset took effect (resetDate, the scheduled boundary, or now)
    trigger TEXT NOT NULL,           -- manual | schedule
    totals TEXT NOT NULL             -- JSON TotalCostData at the reset
);
-- Worst-case cost reserved against block limits by calls in flight (proxy, or enforcement in the
-- plugin); each row is part of its limit's ``reserved``, settled or released when the call ends,
-- released when it expires (a call whose end was never reported).
CREATE TABLE IF NOT EXISTS limit_reservations (
    application_id INTEGER NOT NULL,
    reservation_id TEXT NOT NULL,
    limit_id TEXT NOT NULL,
    amount REAL NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, reservation_id, limit_id)
);
CREATE INDEX IF NOT EXISTS limit_reservations_expiry ON limit_reservations (expires_ms);
CREATE INDEX IF NOT EXISTS limit_history_limit ON limit_history (application_id, limit_id, reset_ms);
CREATE TABLE IF NOT EXISTS limit_alerts (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL,
    limit_id TEXT NOT NULL,
    kind TEXT NOT NULL,              -- threshold | max
    payload TEXT NOT NULL,           -- JSON body of the webhook
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER,                 -- delivered, or given up (see outcome)
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS limit_alerts_pending ON limit_alerts (next_attempt_ms) WHERE done_ms IS NULL;
CREATE TABLE IF NOT EXISTS use_case_definitions (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    description TEXT,                -- NULL for a definition created on first sight by ingest
    created_ms INTEGER NOT NULL,
    logging_enabled INTEGER,         -- NULL: not set (logging on)
    limit_config TEXT,               -- JSON {max, limit_type, threshold, properties}: a limit per new instance
    updated_ms INTEGER,
    PRIMARY KEY (application_id, name)
);
CREATE TABLE IF NOT EXISTS use_case_instances (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    use_case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    properties TEXT,                 -- JSON; NULL when none
    created_ms INTEGER NOT NULL,
    limit_id TEXT,                   -- the limit the definition's limit_config created for this instance
    PRIMARY KEY (application_id, use_case_id)
) WITHOUT ROWID;                     -- one b-tree, not a table plus its key index: most events create an instance
CREATE TABLE IF NOT EXISTS kpis (
    application_id INTEGER NOT NULL,
    use_case_name TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    kpi_type TEXT NOT NULL,          -- boolean | number | percentage | likert5 | likert7 | likert10
    goal REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_name, name)
);
CREATE TABLE IF NOT EXISTS kpi_scores (
    application_id INTEGER NOT NULL,
    use_case_id TEXT NOT NULL,
    kpi_name TEXT NOT NULL,
    score REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_id, kpi_name)
);
CREATE TABLE IF NOT EXISTS resource_versions (
    resource_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,            -- genai-prices | custom
    category TEXT,
    resource TEXT,
    provider TEXT,
    model TEXT,
    prices TEXT NOT NULL,            -- human-readable (genai-prices) or JSON units (custom)
    start_ms INTEGER,
    end_ms INTEGER
);
CREATE TABLE IF NOT EXISTS custom_resources (
    resource_id TEXT PRIMARY KEY,    -- one version of a custom resource (organization-wide, like Pay-i's)
    category TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT,                      -- the resource scope it prices (global, datazone, region...); NULL: any
    units TEXT NOT NULL,             -- JSON {unit: {input_price, output_price}} in USD per unit
    max_input_units INTEGER,
    max_output_units INTEGER,
    max_total_units INTEGER,
    start_ms INTEGER NOT NULL,       -- in force from here until the next version's start
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS custom_resources_by_name ON custom_resources (category, resource, start_ms);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    application_id INTEGER NOT NULL REFERENCES applications(id),
    event_ms INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    category TEXT NOT NULL,
    resource TEXT,
    resource_id TEXT,
    provider_response_id TEXT,
    dedupe_id TEXT,
    use_case_name TEXT,
    use_case_id TEXT,
    use_case_version INTEGER,
    use_case_step TEXT,
    user_id TEXT,
    account_name TEXT,
    resource_scope TEXT,
    http_status_code INTEGER,
    failed INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER,
    ttft_ms INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    units TEXT NOT NULL,
    cost_input REAL,                 -- NULL when the event could not be priced
    cost_output REAL,
    cost_total REAL,
    unpriced_reason TEXT,
    limit_states TEXT,               -- JSON {limit_id: state}; NULL when the request names no limit
    properties TEXT,
    provider_data TEXT,              -- provider_* fields; NULL when logging was disabled
    unknown_units TEXT,              -- JSON {unit: {input, output}} the price had no rate for; NULL when none
    request_tags TEXT                -- JSON array; NULL when none
);
CREATE UNIQUE INDEX IF NOT EXISTS requests_provider_id
    ON requests (application_id, category, provider_response_id) WHERE provider_response_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS requests_dedupe_id
    ON requests (application_id, dedupe_id) WHERE dedupe_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_event_time ON requests (event_ms);
-- GenAI spans received over OTLP, kept for a while to recognise a second span of the same call
-- (see payi_otel.service.otlp); rows older than the window are pruned.
CREATE TABLE IF NOT EXISTS otlp_spans (
    application_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,          -- 32 hex digits
    span_id TEXT NOT NULL,           -- 16 hex digits
    parent_span_id TEXT,
    request_id TEXT NOT NULL,        -- the stored request the span's call became
    call_key TEXT NOT NULL,          -- category and model: spans of one call share it
    rank INTEGER NOT NULL,           -- which span's event the request holds (the highest)
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS otlp_spans_parent ON otlp_spans (application_id, trace_id, parent_span_id);
CREATE INDEX IF NOT EXISTS otlp_spans_seen ON otlp_spans (seen_ms);
"""
SCHEMA_VERSION = 8

# Upgrades of older files, by the version they start from.
_MIGRATIONS = {
    # 1 stored each request's xproxy_result as JSON and its tags in a separate table.
    1: """
ALTER TABLE requests ADD COLUMN unknown_units TEXT;
ALTER TABLE requests ADD COLUMN request_tags TEXT;
UPDATE requests SET
    unknown_units = nullif(json_extract(result, '$.unknown_units'), '{}'),
    request_tags = (SELECT json_group_array(t.tag) FROM request_tags t WHERE t.request_row = requests.id
                    HAVING count(*) > 0);
ALTER TABLE requests DROP COLUMN result;
DROP TABLE request_tags;
""",
    # 2 kept use case instances in a rowid table with a separate key index.
    2: """
CREATE TABLE use_case_instances_3 (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    use_case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    properties TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_id)
) WITHOUT ROWID;
INSERT INTO use_case_instances_3
    SELECT application_id, use_case_id, name, version, nullif(properties, '{}'), created_ms FROM use_case_instances;
DROP TABLE use_case_instances;
ALTER TABLE use_case_instances_3 RENAME TO use_case_instances;
""",
    # 3 kept no limit totals, history or alerts (and no API could create a limit, so the table is empty and
    # made anew), and stored the limit ids a request named as a list.
    3: """
DROP TABLE IF EXISTS limits;
ALTER TABLE requests RENAME COLUMN limit_ids TO limit_states;
UPDATE requests SET limit_states = NULL;
""",
    # 4 kept no use case management fields, instance limits or KPIs.
    4: """
CREATE TABLE IF NOT EXISTS use_case_definitions (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    description TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, name)
);
ALTER TABLE use_case_definitions ADD COLUMN logging_enabled INTEGER;
ALTER TABLE use_case_definitions ADD COLUMN limit_config TEXT;
ALTER TABLE use_case_definitions ADD COLUMN updated_ms INTEGER;
ALTER TABLE use_case_instances ADD COLUMN limit_id TEXT;
""",
    # 5 had no otlp_spans table (the schema script creates it).
    5: "",
    6: "",  # 6 had no custom resources: the table is created with the others
    # 7 kept no reservations of block limits (the schema script creates their table); see _add_reserved.
    7: "",
}


def _add_reserved(conn: sqlite3.Connection) -> None:
    """Files from before version 8 get ``limits.reserved`` (a file from before 4 has no limits table
    yet at this point: the schema script creates it with the column)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(limits)")}
    if columns and "reserved" not in columns:
        conn.execute("ALTER TABLE limits ADD COLUMN reserved REAL NOT NULL DEFAULT 0")


def create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new file, or upgrade an older one, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer payi-otel (schema {version}, this one knows {SCHEMA_VERSION})"
            )
        upgraded = 0 < version < SCHEMA_VERSION
        while 0 < version < SCHEMA_VERSION:  # 0: a new file
            for statement in statements(_MIGRATIONS[version]):
                conn.execute(statement)
            version += 1
        if upgraded:
            _add_reserved(conn)
        for statement in statements(_SCHEMA):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


POSTGRES_FIRST_VERSION = 7
# Upgrades of PostgreSQL databases where SQLite's script does not fit (SQLite's are done in _add_reserved).
_POSTGRES_MIGRATIONS = {7: "ALTER TABLE limits ADD COLUMN IF NOT EXISTS reserved REAL NOT NULL DEFAULT 0;"}
# Serialises the migration of concurrently starting instances (any 64-bit key no other program uses).
_MIGRATION_LOCK = int.from_bytes(b"payiotel", "big")
# PostgreSQL only: a counter bumped by every change of data the instances cache (see StoreBase._check_cached).
_POSTGRES_EXTRA = """
CREATE TABLE IF NOT EXISTS cache_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO cache_generation VALUES (1, 0) ON CONFLICT DO NOTHING;
"""
# PostgreSQL only: the tables ingest writes a row to per event keep no foreign key to their application. Its check
# costs a trigger and a row lock on the application per inserted row (a MultiXact when several instances insert):
# about half the server's work in a bulk COPY. Applications are never deleted, and these rows are written only for
# the application that the request's key authenticated.
_UNCHECKED_REFERENCES = ("requests", "use_case_instances")
_FOREIGN_KEYS = (
    "SELECT conrelid::regclass::text, conname FROM pg_constraint"
    f" WHERE contype = 'f' AND conrelid::regclass::text IN ({', '.join(repr(t) for t in _UNCHECKED_REFERENCES)})"
)


def create_or_migrate_postgres(conn: PgConnection, create: bool) -> None:
    """Create the tables of a new database, or migrate an older one, in one transaction.

    Instances starting at the same time wait for each other on an advisory lock held until commit,
    so exactly one of them migrates and the others find the schema current. ``create=False`` refuses a
    database without the store's tables.
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not (exists and exists[0]) and not create:
            raise NoStoreError("the database holds no payi-otel store; start `payi-otel serve` with it first")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = POSTGRES_FIRST_VERSION if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database was written by a newer payi-otel (schema {version}, this one knows {SCHEMA_VERSION})"
            )
        if row is not None:
            while version < SCHEMA_VERSION:
                for statement in statements(postgres_ddl(_POSTGRES_MIGRATIONS.get(version, _MIGRATIONS[version]))):
                    conn.execute(statement)
                version += 1
        for statement in statements(postgres_ddl(_SCHEMA + _POSTGRES_EXTRA)):
            conn.execute(statement)
        for table, constraint in conn.execute(_FOREIGN_KEYS).fetchall():  # a new database's, or an older one's
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def statements(script: str) -> Iterator[str]:
    """The statements of an SQL script (a ';' inside a comment or string does not end one)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                yield buffer
            buffer = ""
