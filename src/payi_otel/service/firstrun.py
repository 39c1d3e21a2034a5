"""First run: a default group, application and key, so the demo needs no set-up."""

from __future__ import annotations

import os
from pathlib import Path

from payi_otel.service.store import DEFAULT_NAME, Store, StoreError

DEFAULT_KEY_FILE = "default-api-key"


def default_key_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / DEFAULT_KEY_FILE


def ensure_default_application(store: Store) -> Path:
    """Create group and application "default" on an empty store and write its key (mode 0600).

    Returns the path of the key file. Does nothing when applications already exist (on a shared
    PostgreSQL database, another instance starting at the same time may have created it first).
    """
    path = default_key_path(store.data_dir)
    if store.has_applications():
        return path
    try:
        _, key = store.create_application(DEFAULT_NAME, DEFAULT_NAME)
    except StoreError:  # created meanwhile by another instance
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return path


def remember_rotated_key(data_dir: str | os.PathLike[str], application: str, slot: int, key: str) -> None:
    """Keep the default key file working when the key it holds (default application, slot 1) is rotated."""
    path = default_key_path(data_dir)
    if application == DEFAULT_NAME and slot == 1 and path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")


def read_default_key(data_dir: str | os.PathLike[str]) -> str | None:
    path = default_key_path(data_dir)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
