"""Groups, applications and their API keys."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from payi_otel.service import keys
from payi_otel.service.store.connection import StoreBase
from payi_otel.service.store.records import Application, StoreError, now_ms

_KNOWN_KEYS = 1024  # key digests remembered for writes that confirm them (see known_key); forgotten when full


class AppsStore(StoreBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._known_keys: dict[str, Application] = {}  # key digest -> its application, as last read
        super().__init__(*args, **kwargs)

    def create_application(self, name: str, group: str) -> tuple[Application, str]:
        """Create ``name`` in ``group`` (created if new); returns the application and its key (slot 1)."""
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM applications WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"application {name!r} already exists")
            c.execute("INSERT INTO groups (name, created_ms) VALUES (?, ?) ON CONFLICT DO NOTHING", (group, now_ms()))
            group_id = c.execute("SELECT id FROM groups WHERE name = ?", (group,)).fetchone()[0]
            try:
                app_id = c.execute(
                    "INSERT INTO applications (name, group_id, created_ms) VALUES (?, ?, ?) RETURNING id",
                    (name, group_id, now_ms()),
                ).fetchone()[0]
            except self.integrity_errors:  # created meanwhile through another connection
                raise StoreError(f"application {name!r} already exists") from None
            app = Application(app_id, name, group)
            key = self._set_key(app.id, 1)
        return app, key

    def _set_key(self, application_id: int, slot: int) -> str:
        key = keys.new_key()
        self._conn.execute(
            "INSERT INTO api_keys (application_id, slot, key_hash, key_prefix, created_ms) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (application_id, slot) DO UPDATE SET key_hash = excluded.key_hash,"
            " key_prefix = excluded.key_prefix, created_ms = excluded.created_ms",
            (application_id, slot, keys.hash_key(key), keys.display_prefix(key), now_ms()),
        )
        return key

    def rotate_key(self, name: str, slot: int) -> str:
        """Replace key ``slot`` of application ``name``; the old key stops working at once."""
        if slot not in keys.KEY_SLOTS:
            raise StoreError(f"key slot must be one of {keys.KEY_SLOTS}, got {slot}")
        with self.transaction():
            app = self.application(name)
            key = self._set_key(app.id, slot)
        self._known_keys.clear()
        return key

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
        row = self.read_one(
            "SELECT a.id, a.name, g.name, k.key_hash FROM api_keys k JOIN applications a ON a.id = k.application_id"
            " JOIN groups g ON g.id = a.group_id WHERE k.key_hash = ?",
            (digest,),
        )
        if row is None or not keys.matches(key, row[3]):
            self._known_keys.pop(digest, None)
            return None
        app = Application(row[0], row[1], row[2])
        if len(self._known_keys) >= _KNOWN_KEYS:
            self._known_keys.clear()
        self._known_keys[digest] = app
        return app

    def known_key(self, key: str) -> tuple[Application, str] | None:
        """The application ``key`` belonged to when last authenticated, and its digest; None when not known.

        Without a read of the database: a write made for it must confirm the digest still belongs to the
        application in its own transaction (:meth:`keys_in_use`) before it stores anything, so a key rotated
        or removed (by any instance) is refused from the moment that change committed."""
        digest = keys.hash_key(key)
        app = self._known_keys.get(digest)
        return None if app is None else (app, digest)

    def keys_in_use(self, application_id: int, digests: Collection[str]) -> Callable[[], set[str]]:
        """Which of ``digests`` are keys of the application, read in the open transaction; the answer is asked
        for by calling the result (on PostgreSQL the query travels with the next statement: no round trip of
        its own unless none follows). Digests found missing are forgotten by :meth:`known_key`."""
        marks = ", ".join("?" * len(digests))
        rows = self.query_later(
            f"SELECT key_hash FROM api_keys WHERE application_id = ? AND key_hash IN ({marks})",
            (application_id, *digests),
        )

        def found() -> set[str]:
            in_use = {digest for (digest,) in rows()}
            for digest in digests:
                if digest not in in_use:
                    self._known_keys.pop(digest, None)
            return in_use

        return found
