"""The business-context model: the immutable, merged :class:`BusinessContext` and Pay-i's rules for
applying one layer of context on top of another (:func:`merge`). Pure: no state, no OpenTelemetry."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Unpack

from payi_otel import protocol as P
from payi_otel.context_validation import FIELDS, ContextLayer, validate_layer

__all__ = ["BusinessContext", "merge"]


@dataclass(frozen=True, slots=True)
class BusinessContext:
    """The merged business context in effect (global defaults applied). Immutable."""

    use_case_name: str | None = None
    use_case_id: str | None = None
    use_case_version: int | None = None
    use_case_step: str | None = None
    user_id: str | None = None
    account_name: str | None = None
    request_tags: tuple[str, ...] | None = None
    limit_ids: tuple[str, ...] | None = None
    request_properties: Mapping[str, str | None] | None = None
    use_case_properties: Mapping[str, str | None] | None = None
    price_as_category: str | None = None
    price_as_resource: str | None = None
    resource_scope: str | None = None
    _attributes: Mapping[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def span_attributes(self) -> Mapping[str, Any]:
        """Span attributes (names from ``payi_otel.attributes``); computed once, read-only."""
        attrs = self._attributes
        if attrs is None:
            attrs = MappingProxyType(self._build_attributes())
            object.__setattr__(self, "_attributes", attrs)
        return attrs

    def _build_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, attribute in _SPAN_ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                out[attribute] = value
        for name, prefix in _SPAN_ATTRIBUTE_PREFIXES:
            props = getattr(self, name)
            if props:
                for key, value in props.items():
                    if value is not None:
                        out[prefix + key] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        """The values that are set, as plain Python values (lists and dicts are copies)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out


_EMPTY = BusinessContext()
# Span attributes: one per field, and a flattened attribute per key of a property map (PROPS).
_SPAN_ATTRIBUTES = tuple((f.name, f.attribute) for f in P.CONTEXT_FIELDS if f.kind != P.PROPS)
_SPAN_ATTRIBUTE_PREFIXES = tuple((f.name, f.attribute) for f in P.CONTEXT_FIELDS if f.kind == P.PROPS)
_USE_CASE_BOUND = tuple(f.name for f in P.CONTEXT_FIELDS if f.use_case_bound)


def _scalar(layer: dict[str, Any], key: str, inherited: Any) -> Any:
    value = layer.get(key)
    if value is None:
        return inherited
    return value if value != "" else None


def _union(layer: dict[str, Any], key: str, inherited: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = layer.get(key)
    if value is None:
        return inherited
    if not value:
        return None
    if not inherited:
        return tuple(value)
    return inherited + tuple(v for v in value if v not in inherited)


def _merge_props(layer: dict[str, Any], key: str, inherited: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    value = layer.get(key)
    if value is None:
        return inherited
    if not value:
        return None
    return MappingProxyType({**inherited, **value} if inherited else dict(value))


# The fields outside the use case, each with the merge rule of its kind: a scalar replaces, a list is the
# union with the parent's, a property map merges key by key.
_KIND_MERGES: dict[str, Callable[[dict[str, Any], str, Any], Any]] = {
    P.STR: _scalar,
    P.LIST: _union,
    P.PROPS: _merge_props,
}
_UNBOUND_MERGES = tuple(
    (f.name, _KIND_MERGES[f.kind]) for f in P.CONTEXT_FIELDS if not f.use_case_bound and f.name != "use_case_name"
)


def _merge(
    parent: BusinessContext | None, layer: dict[str, Any], new_id: Callable[[], str], strict: bool
) -> BusinessContext:
    """Apply one validated layer on top of ``parent`` (Pay-i's nesting rules)."""
    p = parent or _EMPTY
    name = layer.get("use_case_name")
    new_instance = False
    if name is None:
        uc_name = p.use_case_name
    elif name == "":
        uc_name = None
    else:
        uc_name = name
        new_instance = name != p.use_case_name

    if name == "":
        uc_id = version = step = uc_props = None
    else:
        uc_id, version, step, uc_props = p.use_case_id, p.use_case_version, p.use_case_step, p.use_case_properties

    if uc_name is None:
        if strict:
            for key in _USE_CASE_BOUND:
                value = layer.get(key)
                if value is not None and value != "" and value != {}:
                    raise ValueError(
                        f"{key}: requires a use_case_name in effect (give use_case_name here, in an "
                        "enclosing track/track_context, or in instrument())"
                    )
        uc_id = version = step = uc_props = None
    else:
        if "use_case_id" in layer:
            uc_id = layer["use_case_id"] or None
        elif new_instance:
            uc_id = new_id()
        version = layer.get("use_case_version", version)
        step = _scalar(layer, "use_case_step", step)
        uc_props = _merge_props(layer, "use_case_properties", uc_props)

    return BusinessContext(
        use_case_name=uc_name,
        use_case_id=uc_id,
        use_case_version=version,
        use_case_step=step,
        use_case_properties=uc_props,
        **{name: merge(layer, name, getattr(p, name)) for name, merge in _UNBOUND_MERGES},
    )


def _uuid4() -> str:
    return str(uuid.uuid4())


def merge(parent: BusinessContext | None, **layer: Unpack[ContextLayer]) -> BusinessContext:
    """Apply one layer of context keywords on top of ``parent`` and return the result (pure).

    Rules (Pay-i's): ``None`` inherits; an empty value clears; ``limit_ids`` and ``request_tags``
    are the union with the parent's (parent first, deduplicated); property dicts merge with the
    new keys winning; a different ``use_case_name`` starts a new instance (a fresh uuid4
    ``use_case_id`` unless one is given) while the same name keeps the parent's id;
    ``use_case_name=""`` clears name, id, version, step and use-case properties. A use-case id,
    version, step or properties without a use-case name in effect raises ``ValueError``.
    """
    return _merge(parent, validate_layer(layer), _uuid4, strict=True)
