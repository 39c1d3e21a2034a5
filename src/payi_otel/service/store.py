"""The local service's SQLite store: the one module that owns SQL.

One file (``payi.db``) in the data directory, in WAL mode with ``synchronous=NORMAL``: a commit
survives the process being killed, readers (the CLI, reports) never block the server, and the CLI can
manage applications while the server runs. Every write that the API acknowledges is committed first.

Tables: ``groups`` > ``applications`` > ``api_keys`` (two slots, SHA-256 digests only);
``requests`` (one row per ingested event: attribution, units and cost in columns, from which the
``xproxy_result`` is rebuilt on read, so rows stay small and bulk inserts fast);
``use_case_definitions`` / ``use_case_instances``; ``resource_versions`` (the price snapshot behind
each ``resource_id``: genai-prices today, custom resource versions later); ``limits`` (per
application; ingest checks limit ids against it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from random import getrandbits as _random_bits

from payi_otel.service import keys

DB_FILE = "payi.db"
WAL_RESTART_FRAMES = 16384  # about 64 MiB of WAL: past it the log is started over (see start_background_checkpoints)
DEFAULT_NAME = "default"

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
    PRIMARY KEY (application_id, limit_id)
);
CREATE TABLE IF NOT EXISTS use_case_definitions (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    description TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, name)
);
CREATE TABLE IF NOT EXISTS use_case_instances (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    use_case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    properties TEXT,                 -- JSON; NULL when none
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_id)
) WITHOUT ROWID;                     -- one b-tree, not a table plus its key index: most events create an instance
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
    limit_ids TEXT,
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
"""
SCHEMA_VERSION = 3

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
}

# Column order of a request row (see Store.add_requests).
REQUEST_COLUMNS = (
    "request_id", "application_id", "event_ms", "ingest_ms", "category", "resource", "resource_id",
    "provider_response_id", "dedupe_id", "use_case_name", "use_case_id", "use_case_version", "use_case_step",
    "user_id", "account_name", "resource_scope", "http_status_code", "failed", "latency_ms", "ttft_ms",
    "input_tokens", "output_tokens", "units", "cost_input", "cost_output", "cost_total", "unpriced_reason",
    "limit_ids", "properties", "provider_data", "unknown_units", "request_tags",
)
_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_INSERT_INSTANCE = (
    "INSERT INTO use_case_instances (application_id, use_case_id, name, version, properties, created_ms)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# What a stored request's xproxy_result is rebuilt from (order of StoredRequest's fields).
_RESULT_COLUMNS = (
    "request_id, event_ms, ingest_ms, use_case_name, use_case_id, use_case_version, use_case_step, user_id,"
    " account_name, resource_id, cost_input, cost_output, cost_total, unpriced_reason, unknown_units, request_tags"
)
_SELECT_RESULT = f"SELECT {_RESULT_COLUMNS} FROM requests WHERE application_id = ? AND "
_RESULT_BY_DEDUPE_ID = _SELECT_RESULT + "dedupe_id = ?"
_RESULT_BY_REQUEST_ID = _SELECT_RESULT + "request_id = ?"
_RESULT_BY_PROVIDER_ID = _SELECT_RESULT + "category = ? AND provider_response_id = ?"

# Report dimensions -> SQL expression (the only place report columns are spelled in SQL).
REPORT_DIMENSIONS: dict[str, str] = {
    "application": "a.name",
    "group": "g.name",
    "use_case": "r.use_case_name",
    "user": "r.user_id",
    "account": "r.account_name",
    "tag": "t.value",
    "category": "r.category",
    "resource": "r.resource",
    "day": "date(r.event_ms / 1000, 'unixepoch')",
}


class StoreError(Exception):
    """A management operation on the store was refused; the message says why."""


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
    unknown_units: dict[str, dict[str, int]]
    request_tags: list[str]

    @classmethod
    def from_request_row(cls, row: tuple[Any, ...]) -> StoredRequest:
        """From a row as given to :meth:`Store.add_requests` (values in ``REQUEST_COLUMNS`` order)."""
        return cls.from_row(tuple(row[i] for i in _RESULT_INDEXES))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredRequest:
        """From a row of ``_RESULT_COLUMNS``."""
        *head, unknown, tags = row
        return cls(*head, orjson.loads(unknown) if unknown else {}, orjson.loads(tags) if tags else [])


_RESULT_INDEXES = tuple(REQUEST_COLUMNS.index(c.strip()) for c in _RESULT_COLUMNS.split(","))


def now_ms() -> int:
    return int(time.time() * 1000)


_VARIANT = 0x8 << 60  # RFC 4122 variant bits (10) on top of the last 64 bits


def new_id() -> str:
    """A time-ordered UUID (version 7 layout): ids sort by creation, so index inserts append.

    Ids identify, they are not secrets, so the fast non-cryptographic generator is enough.
    """
    rand = _random_bits(74)
    h = f"{now_ms():012x}7{rand >> 62:03x}{_VARIANT | (rand & 0x3FFFFFFFFFFFFFFF):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Store:
    """All persistent state of the local service."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: indexes stay hot as data grows
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._wal_restart_due = False
        self._lock = threading.RLock()
        self._depth = 0
        self._known_resource_ids: set[str] = set()
        self._definition_versions: dict[tuple[int, str], int] = {}
        self._create_or_migrate()

    def _create_or_migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} was written by a newer payi-otel (schema {version}, this one knows {SCHEMA_VERSION})"
                    )
                while 0 < version < SCHEMA_VERSION:  # 0: a new file
                    for statement in _statements(_MIGRATIONS[version]):
                        self._conn.execute(statement)
                    version += 1
                for statement in _statements(_SCHEMA):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def start_background_checkpoints(self, interval: float = 1.0, restart_frames: int = WAL_RESTART_FRAMES) -> None:
        """Move WAL checkpoints (which fsync the database file) off the serving thread.

        The serving connection stops auto-checkpointing; a thread with its own connection runs a
        PASSIVE checkpoint every ``interval`` seconds, which never blocks writers. Under constant
        writes such a checkpoint never catches up with the last frames, and SQLite starts the log
        over only once every frame is back in the database, so the WAL would grow without bound.
        Once it passes ``restart_frames`` the thread asks the writer to copy the few frames
        written since its last pass right after its next commit (see :meth:`commit`); the next
        write transaction then starts the log over (and truncates the file to the size limit).
        """
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA journal_size_limit={restart_frames * 4096}")

        def loop() -> None:
            conn = sqlite3.connect(self.path, timeout=10.0)
            try:
                while not self._stop_checkpoints.wait(interval):
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > restart_frames:
                        self._wal_restart_due = True
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=loop, name="payi-otel-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
            self._conn.close()

    def begin(self) -> None:
        """Open a transaction that several units of work share until :meth:`commit` (group commit)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        with self._lock:
            self._conn.execute("COMMIT")
            if self._wal_restart_due:
                self._wal_restart_due = False
                try:  # the commit above stands whatever happens here; the next pass retries
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass

    def rollback(self) -> None:
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._definition_versions.clear()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work.

        Outside a transaction it is committed on exit; inside an open one (group commit, or nested)
        it is a savepoint: undone alone on error, committed with the enclosing transaction.
        """
        with self._lock:
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    self._definition_versions.clear()
                    raise
                self._conn.execute("COMMIT")
                return
            self._depth += 1
            name = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield self._conn
            except BaseException:
                self._definition_versions.clear()
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self._conn.execute(f"RELEASE {name}")

    # --- organization: groups, applications, keys -----------------------------------------
    def create_application(self, name: str, group: str) -> tuple[Application, str]:
        """Create ``name`` in ``group`` (created if new); returns the application and its key (slot 1)."""
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM applications WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"application {name!r} already exists")
            c.execute("INSERT OR IGNORE INTO groups (name, created_ms) VALUES (?, ?)", (group, now_ms()))
            group_id = c.execute("SELECT id FROM groups WHERE name = ?", (group,)).fetchone()[0]
            cur = c.execute(
                "INSERT INTO applications (name, group_id, created_ms) VALUES (?, ?, ?)", (name, group_id, now_ms())
            )
            app = Application(cur.lastrowid, name, group)
            key = self._set_key(app.id, 1)
        return app, key

    def _set_key(self, application_id: int, slot: int) -> str:
        key = keys.new_key()
        self._conn.execute(
            "INSERT OR REPLACE INTO api_keys (application_id, slot, key_hash, key_prefix, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (application_id, slot, keys.hash_key(key), keys.display_prefix(key), now_ms()),
        )
        return key

    def rotate_key(self, name: str, slot: int) -> str:
        """Replace key ``slot`` of application ``name``; the old key stops working at once."""
        if slot not in keys.KEY_SLOTS:
            raise StoreError(f"key slot must be one of {keys.KEY_SLOTS}, got {slot}")
        with self.transaction():
            app = self.application(name)
            return self._set_key(app.id, slot)

    def application(self, name: str) -> Application:
        row = self._conn.execute(
            "SELECT a.id, a.name, g.name FROM applications a JOIN groups g ON g.id = a.group_id WHERE a.name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no application named {name!r}")
        return Application(*row)

    def applications(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT a.id, a.name, g.name, a.created_ms FROM applications a JOIN groups g ON g.id = a.group_id"
            " ORDER BY a.name"
        ).fetchall()
        out = []
        for app_id, name, group, created in rows:
            slots = self._conn.execute(
                "SELECT slot, key_prefix, created_ms FROM api_keys WHERE application_id = ? ORDER BY slot", (app_id,)
            ).fetchall()
            requests = self._conn.execute(
                "SELECT count(*) FROM requests WHERE application_id = ?", (app_id,)
            ).fetchone()[0]
            out.append(
                {
                    "name": name,
                    "group": group,
                    "created_ms": created,
                    "requests": requests,
                    "keys": [{"slot": s, "prefix": p, "created_ms": t} for s, p, t in slots],
                }
            )
        return out

    def has_applications(self) -> bool:
        return self._conn.execute("SELECT 1 FROM applications LIMIT 1").fetchone() is not None

    def authenticate(self, key: str) -> Application | None:
        """The application ``key`` belongs to, or None."""
        digest = keys.hash_key(key)
        with self._lock:
            row = self._conn.execute(
                "SELECT a.id, a.name, g.name, k.key_hash FROM api_keys k JOIN applications a ON a.id = k.application_id"
                " JOIN groups g ON g.id = a.group_id WHERE k.key_hash = ?",
                (digest,),
            ).fetchone()
        if row is None or not keys.matches(key, row[3]):
            return None
        return Application(row[0], row[1], row[2])

    # --- ingest ----------------------------------------------------------------------------
    def find_duplicate(
        self, application_id: int, category: str, provider_response_id: str | None, dedupe_id: str | None
    ) -> StoredRequest | None:
        found = None
        if dedupe_id is not None:
            found = self._stored_request(_RESULT_BY_DEDUPE_ID, (application_id, dedupe_id))
        if found is None and provider_response_id is not None:
            found = self._stored_request(_RESULT_BY_PROVIDER_ID, (application_id, category, provider_response_id))
        return found

    def _stored_request(self, sql: str, params: tuple[Any, ...]) -> StoredRequest | None:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else StoredRequest.from_row(row)

    def unknown_limit_ids(self, application_id: int, limit_ids: list[str]) -> list[str]:
        """The ids in ``limit_ids`` that are not limits of this application."""
        if not limit_ids:
            return []
        marks = ",".join("?" * len(limit_ids))
        known = {
            r[0]
            for r in self._conn.execute(
                f"SELECT limit_id FROM limits WHERE application_id = ? AND limit_id IN ({marks})",
                (application_id, *limit_ids),
            )
        }
        return [i for i in limit_ids if i not in known]

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
            merged = _merge_properties({}, properties)
            row = (application_id, use_case_id, name, version, _dumps(merged) if merged else None, ts)
            if new_instances is not None and use_case_id_generated:
                new_instances.append(row)
            else:
                c.execute(_INSERT_INSTANCE, row)
        elif properties:
            merged = _merge_properties(orjson.loads(existing[0] or "{}"), properties)
            c.execute(
                "UPDATE use_case_instances SET properties = ? WHERE application_id = ? AND use_case_id = ?",
                (_dumps(merged), application_id, use_case_id),
            )
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

    def add_requests(self, rows: list[tuple[Any, ...]], new_instances: list[tuple[Any, ...]] = ()) -> None:
        """Insert request rows (values in ``REQUEST_COLUMNS`` order) and deferred use case instances."""
        if new_instances:
            self._conn.executemany(_INSERT_INSTANCE, new_instances)
        if rows:
            self._conn.executemany(_INSERT_REQUEST, rows)

    # --- requests API ---------------------------------------------------------------------
    def request_result(
        self,
        application_id: int,
        request_id: str | None = None,
        category: str | None = None,
        provider_response_id: str | None = None,
    ) -> StoredRequest | None:
        """A stored request of this application, by request id or by (category, provider response id)."""
        with self._lock:
            if request_id is not None:
                return self._stored_request(_RESULT_BY_REQUEST_ID, (application_id, request_id))
            return self._stored_request(_RESULT_BY_PROVIDER_ID, (application_id, category, provider_response_id))

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
            merged = _merge_properties(json.loads(row[0] or "{}"), properties)
            c.execute(
                "UPDATE requests SET properties = ? WHERE application_id = ? AND request_id = ?",
                (_dumps(merged), application_id, request_id),
            )
        return True

    # --- reports ----------------------------------------------------------------------------
    def report_rows(
        self, dimensions: list[str], since_ms: int | None, until_ms: int | None
    ) -> Iterator[tuple[Any, ...]]:
        """Per request: (*dimension values, row id, cost_total|None, input_tokens, output_tokens, failed, latency_ms).

        A request with several tags yields one row per tag when grouping by tag.
        """
        exprs = [REPORT_DIMENSIONS[d] for d in dimensions]
        sql = [
            "SELECT",
            ", ".join([*exprs, "r.id", "r.cost_total", "r.input_tokens", "r.output_tokens", "r.failed", "r.latency_ms"]),
            "FROM requests r JOIN applications a ON a.id = r.application_id JOIN groups g ON g.id = a.group_id",
        ]
        if "tag" in dimensions:
            sql.append("LEFT JOIN json_each(r.request_tags) t")
        where, params = [], []
        if since_ms is not None:
            where.append("r.event_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("r.event_ms < ?")
            params.append(until_ms)
        if where:
            sql.append("WHERE " + " AND ".join(where))
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
        try:
            yield from reader.execute(" ".join(sql), params)
        finally:
            reader.close()


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script (a ';' inside a comment or string does not end one)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                yield buffer
            buffer = ""


def _merge_properties(current: dict[str, str], update: dict[str, str | None] | None) -> dict[str, str]:
    merged = dict(current)
    for k, v in (update or {}).items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
