"""Application API keys: generation and hashing.

A key is shown once, when it is created or rotated; only its SHA-256 digest is stored. Keys are
high-entropy random strings, so a plain digest (no salt, no slow KDF) is the right tool: it lets the
service find the owning application with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk-payi-app-"
KEY_SLOTS = (1, 2)  # every application has two independently rotatable keys


def new_key() -> str:
    """A fresh API key (256 bits of randomness)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Hex SHA-256 digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    """Constant-time check of ``key`` against a stored digest."""
    return hmac.compare_digest(hash_key(key), stored_hash)


def display_prefix(key: str) -> str:
    """The part of a key that is safe to show in listings (to tell keys apart)."""
    return key[: len(KEY_PREFIX) + 4] + "..."
