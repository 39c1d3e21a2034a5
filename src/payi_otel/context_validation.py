"""Validation of business-context values (the keywords of ``track``, ``track_context``,
``instrument`` and ``set_global_defaults``).

Every check raises ``TypeError`` (wrong type) or ``ValueError`` (right type, bad value) with a
message that starts with the parameter name and states the rule. ``None`` always means "not
given" (inherit); the empty value of a field (``""``, an empty collection, ``{}``) means "clear".

A validated layer is a plain dict holding only the keys that were given, normalized:
collections become tuples (sets are sorted so the order is stable), property maps become
fresh dicts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypedDict

from payi_otel import protocol as P

# The business-context keywords, in the order they appear in signatures and dicts.
FIELDS = P.CONTEXT_FIELD_NAMES


def _require_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: must be a string, got {type(value).__name__}")
    problem = P.text_problem(value)
    if problem is not None:
        raise ValueError(f"{name}: {P.preview(value)} {problem}")
    return value


def _use_case_name(value: Any) -> str:
    name = _require_str("use_case_name", value)
    if name and not P.USE_CASE_NAME_RULE.fullmatch(name):
        raise ValueError(f'use_case_name: {name!r} must be {P.USE_CASE_NAME_RULE_TEXT} (or "" to clear the use case)')
    return name


def _no_whitespace(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _require_str(name, value)
        if P.has_whitespace(text):
            raise ValueError(f'{name}: {text!r} must not contain spaces (or be "" to clear it)')
        return text

    return check


def _plain_str(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        return _require_str(name, value)

    return check


def _use_case_version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"use_case_version: must be an int, got {type(value).__name__}")
    if not 0 <= value <= P.MAX_USE_CASE_VERSION:
        raise ValueError(
            f"use_case_version: {P.preview(value)} must be a non-negative integer at most {P.MAX_USE_CASE_VERSION}"
        )
    return value


def _resource_scope(value: Any) -> str:
    scope = _require_str("resource_scope", value)
    if scope and not P.RESOURCE_SCOPE_RULE.fullmatch(scope):
        raise ValueError(f'resource_scope: {scope!r} must be {P.RESOURCE_SCOPE_RULE_TEXT} (or "" to clear it)')
    return scope


def _string_list(name: str, item_rule: str, item_check: Callable[[str], object]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
            raise TypeError(f"{name}: must be a list, tuple or set of strings, got {type(value).__name__}")
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        if len(items) > P.MAX_LIST_ITEMS:
            raise ValueError(f"{name}: at most {P.MAX_LIST_ITEMS} entries, got {len(items)}")
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"{name}: every entry must be a string, got {type(item).__name__}")
            problem = P.text_problem(item)
            if problem is not None:
                raise ValueError(f"{name}: entry {P.preview(item)} {problem}")
            if not item_check(item):
                raise ValueError(f"{name}: entry {P.preview(item)} {item_rule}")
            if item not in out:
                out.append(item)
        return tuple(out)

    return check


def _limit_id_ok(item: str) -> bool:
    return bool(item) and item == item.strip() and "," not in item


def _properties(name: str) -> Callable[[Any], dict[str, str | None]]:
    def check(value: Any) -> dict[str, str | None]:
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{name}: must be a dict of string keys to string (or None) values, got {type(value).__name__}"
            )
        if len(value) > P.MAX_PROPERTIES:
            raise ValueError(f"{name}: at most {P.MAX_PROPERTIES} keys, got {len(value)}")
        out: dict[str, str | None] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"{name}: keys must be non-empty strings, got {P.preview(key)}")
            problem = P.text_problem(key)
            if problem is not None:
                raise ValueError(f"{name}: key {P.preview(key)} {problem}")
            if item is not None and not isinstance(item, str):
                raise TypeError(
                    f"{name}: value of {P.preview(key)} must be a string or None, got {type(item).__name__}"
                )
            if item is not None and len(item) > P.MAX_PROPERTY_VALUE_LENGTH:
                raise ValueError(
                    f"{name}: value of {P.preview(key)} must be at most {P.MAX_PROPERTY_VALUE_LENGTH} characters"
                )
            out[key] = item
        return out

    return check


# Fields with a rule of their own; the others are checked by their kind (any string, a property map).
_RULES: dict[str, Callable[[Any], Any]] = {
    "use_case_name": _use_case_name,
    "use_case_id": _no_whitespace("use_case_id"),
    "use_case_version": _use_case_version,
    "user_id": _no_whitespace("user_id"),
    "request_tags": _string_list("request_tags", f"must be {P.REQUEST_TAG_RULE_TEXT}", P.REQUEST_TAG_RULE.fullmatch),
    "limit_ids": _string_list(
        "limit_ids", "must be a non-empty string without commas or surrounding spaces", _limit_id_ok
    ),
    "resource_scope": _resource_scope,
}
_KIND_RULES: dict[str, Callable[[str], Callable[[Any], Any]]] = {P.STR: _plain_str, P.PROPS: _properties}
_CHECKS = {f.name: _RULES.get(f.name) or _KIND_RULES[f.kind](f.name) for f in P.CONTEXT_FIELDS}


def validate_layer(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalize one context layer; keys whose value is ``None`` are dropped."""
    layer: dict[str, Any] = {}
    for key, value in values.items():
        check = _CHECKS.get(key)
        if check is None:
            raise TypeError(f"{key}: unknown business-context keyword (known: {', '.join(FIELDS)})")
        if value is not None:
            layer[key] = check(value)
    return layer


class ContextLayer(TypedDict, total=False):
    """The business-context keywords accepted by ``track``, ``track_context``, ``merge``,
    ``set_global_defaults`` and ``instrument``. ``None`` inherits, an empty value clears."""

    use_case_name: str | None
    use_case_id: str | None
    use_case_version: int | None
    use_case_step: str | None
    user_id: str | None
    account_name: str | None
    request_tags: Collection[str] | None
    limit_ids: Collection[str] | None
    request_properties: Mapping[str, str | None] | None
    use_case_properties: Mapping[str, str | None] | None
    price_as_category: str | None
    price_as_resource: str | None
    resource_scope: str | None


# --- Pay-i per-call attribution headers (``extra_headers={"xProxy-User-ID": ...}``) ----------

# Lower-cased header name -> (context keyword, kind: how the header value becomes the keyword's value).
_HEADERS: dict[str, tuple[str, str]] = {f.header.lower(): (f.name, f.kind) for f in P.CONTEXT_FIELDS}


def parse_properties_header(header: str, raw: str) -> dict[str, str | None]:
    """A properties header's value: a JSON object, or Base64 of one (as Pay-i's proxy takes it).

    A malformed value raises ValueError naming the header."""
    text = raw.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"{header}: must be a JSON object or base64 of a JSON object") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{header}: must be a JSON object or base64 of a JSON object") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{header}: must be a JSON object, got {type(parsed).__name__}")
    return {
        str(k): v if v is None or isinstance(v, str) else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
        for k, v in parsed.items()
    }


def layer_from_headers(headers: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Split Pay-i ``xProxy-*`` attribution headers (any letter case) from other headers.

    Returns ``(layer_kwargs, remaining_headers)``: ``layer_kwargs`` is ready for
    ``payi_otel.context.merge(parent, **layer_kwargs)``; ``remaining_headers`` holds every other
    header unchanged (the input mapping is not modified). Limit ids and request tags are
    comma-separated; properties are JSON or base64 JSON; an empty header value clears the field
    (for ``xProxy-UseCase-Version`` an empty value is ignored). A malformed value raises
    ``ValueError`` naming the header.
    """
    layer: dict[str, Any] = {}
    remaining: dict[str, str] = {}
    if not headers:
        return layer, remaining
    for name, raw in headers.items():
        spec = _HEADERS.get(name.lower()) if isinstance(name, str) else None
        if spec is None:
            remaining[name] = raw
            continue
        key, kind = spec
        value = raw if isinstance(raw, str) else str(raw)
        if kind == P.STR:
            layer[key] = value.strip()
        elif kind == P.LIST:
            layer[key] = [item.strip() for item in value.split(",") if item.strip()]
        elif kind == P.INT:
            if value.strip():
                try:
                    layer[key] = int(value.strip())
                except ValueError:
                    raise ValueError(f"{name}: {value!r} must be an integer") from None
        else:
            layer[key] = parse_properties_header(name, value) if value.strip() else {}
    return layer, remaining
