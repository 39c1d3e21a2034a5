"""Prices Pay-i events with genai-prices (no hand-written price table).

A Pay-i event carries ``units``: ``{unit_type: {input, output}}`` where ``text.input`` excludes cache
reads/writes and ``text.output`` excludes reasoning. genai-prices prices a :class:`genai_prices.Usage`
whose ``input_tokens`` is inclusive. Because prices are linear in token counts (within one tier), the
pricer derives, once per (price snapshot, tier, unit type), the USD cost of one unit by asking
genai-prices to price a probe usage, and then prices every event with a few multiplications. That
keeps the per-event cost in microseconds while genai-prices stays the only source of prices.

Prices follow the event time: ``ModelInfo.get_prices(event_timestamp)`` picks the price in force
then, so backfilled events are priced at the old price. ``resource_id`` names the (provider, model,
price snapshot) used and is stable across restarts.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from genai_prices import Usage as PriceUsage
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

# Pay-i category -> genai-prices provider ids, tried in order.
CATEGORY_PROVIDERS: dict[str, tuple[str, ...]] = {
    "system.openai": ("openai",),
    "system.azureopenai": ("azure", "openai"),
    "system.azure": ("azure", "anthropic", "openai"),
    "system.anthropic": ("anthropic",),
    "system.aws.bedrock": ("aws",),
    "system.google.vertex": ("google",),
    "system.databricks.azure": ("databricks",),
    "system.databricks.aws": ("databricks",),
    "system.databricks.google": ("databricks",),
}

# Vertex resource names carry a publisher prefix (google.gemini-2.5-pro, anthropic.claude-...).
_RESOURCE_PREFIXES = ("google.", "anthropic.", "publishers/google/models/", "models/")

LARGE_CONTEXT_SUFFIX = "_large_context"
GLOBAL_SCOPE = "global"

# Pay-i unit type -> genai-prices usage keys for one unit, per direction. Input probes are inclusive:
# a cached token is also an input token in genai-prices' model.
_INPUT_PROBES: dict[str, tuple[str, ...]] = {
    "text": (),
    "text_cache_read": ("cache_read_tokens",),
    "text_cache_write": ("cache_write_tokens",),
    "text_cache_write_1h": ("cache_write_tokens", "cache_write_1h_tokens"),
    "audio": ("input_audio_tokens",),
    "vision": ("input_image_tokens",),
    "video": ("input_video_tokens",),
    # Gemini bills document (PDF) tokens at its text input rate; genai-prices has no separate price.
    "document": (),
    "document_cache_read": ("cache_read_tokens",),
    "audio_cache_read": ("cache_read_tokens", "input_audio_tokens", "cache_audio_read_tokens"),
    "vision_cache_read": ("cache_read_tokens", "input_image_tokens", "cache_image_read_tokens"),
    "video_cache_read": ("cache_read_tokens", "input_video_tokens", "cache_video_read_tokens"),
}
_OUTPUT_PROBES: dict[str, tuple[str, ...]] = {
    "text": (),
    "reasoning": ("output_reasoning_tokens",),
    "audio": ("output_audio_tokens",),
    "vision": ("output_image_tokens",),
    "video": ("output_video_tokens",),
}
# Unit types counted in requests rather than tokens: (direction, genai-prices usage key).
_COUNT_UNITS: dict[str, tuple[str, str]] = {"web_search_request": ("output", "web_searches")}

_PROBE = 1_000_000


@dataclass(slots=True)
class PriceResult:
    """Outcome of pricing one event. ``priced`` False means cost is unknown (never $0)."""

    priced: bool
    input_cost: float = 0.0
    output_cost: float = 0.0
    resource_id: str | None = None
    unknown_units: dict[str, dict[str, int]] = field(default_factory=dict)
    unpriced_reason: str | None = None
    resource_version: dict[str, Any] | None = None  # description of the price snapshot, for the store

    @property
    def total_cost(self) -> float:
        return self.input_cost + self.output_cost


@dataclass(slots=True)
class _Snapshot:
    resource_id: str
    tiers: tuple[int, ...]  # ascending tier starts (empty when the price is flat)
    description: dict[str, Any]


def split_large_context(unit_type: str) -> tuple[str, bool]:
    if unit_type.endswith(LARGE_CONTEXT_SUFFIX):
        return unit_type[: -len(LARGE_CONTEXT_SUFFIX)], True
    return unit_type, False


class Pricer:
    """Thread-safe, caching event pricer backed by genai-prices' bundled data."""

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str, str, str | None], tuple[Provider, ModelInfo] | str] = {}
        self._snapshots: dict[int, tuple[ModelPrice, _Snapshot]] = {}
        self._coefficients: dict[tuple[int, int, str], tuple[float | None, float | None]] = {}
        self._lock = threading.Lock()

    # --- lookups -------------------------------------------------------------------------
    def _find_model(self, category: str, resource: str, scope: str | None = None) -> tuple[Provider, ModelInfo] | str:
        key = (category, resource, scope)
        found = self._models.get(key)
        if found is None:
            found = self._lookup(category, resource, scope)
            self._models[key] = found
        return found

    def context_window(self, category: str, resource: str) -> int | None:
        """The model's context window in tokens (input and output), when the price data knows it."""
        found = self._find_model(category, resource)
        return None if isinstance(found, str) else found[1].context_window

    def _lookup(self, category: str, resource: str, scope: str | None = None) -> tuple[Provider, ModelInfo] | str:
        providers = CATEGORY_PROVIDERS.get(category)
        if providers is None:
            return f"category {category!r} has no prices (priced categories: {', '.join(CATEGORY_PROVIDERS)})"
        # Resource scope "global": the provider's global price where it has one (Bedrock's global
        # inference profiles are priced under their "global." model ids), else the model's own price.
        refs = [f"{GLOBAL_SCOPE}.{resource}", resource] if scope == GLOBAL_SCOPE else [resource]
        for prefix in _RESOURCE_PREFIXES:
            if resource.startswith(prefix):
                refs.append(resource[len(prefix) :])
        for provider_id in providers:
            for ref in refs:
                try:
                    return self._snapshot.find_provider_model(ref, None, provider_id, None)
                except LookupError:
                    continue
        return f"no price for resource {resource!r} in category {category!r}"

    def _price_snapshot(self, provider: Provider, model: ModelInfo, when: datetime) -> tuple[ModelPrice, _Snapshot]:
        model_price = model.get_prices(when)
        entry = self._snapshots.get(id(model_price))
        if entry is None:
            text = f"{provider.id}|{model.id}|{model_price!r}"
            resource_id = "gp-" + hashlib.sha256(text.encode()).hexdigest()[:16]
            tiers = sorted(
                {t.start for v in model_price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers}
            )
            description = {
                "resource_id": resource_id,
                "source": "genai-prices",
                "provider": provider.id,
                "model": model.id,
                "prices": str(model_price),
            }
            entry = (model_price, _Snapshot(resource_id, tuple(tiers), description))
            with self._lock:
                self._snapshots[id(model_price)] = entry
        return entry

    def _coefficient(
        self, model_price: ModelPrice, snap: _Snapshot, tier: int, unit_type: str
    ) -> tuple[float | None, float | None]:
        key = (id(model_price), tier, unit_type)
        coef = self._coefficients.get(key)
        if coef is None:
            coef = self._derive(model_price, snap, tier, unit_type)
            with self._lock:
                self._coefficients[key] = coef
        return coef

    def _derive(
        self, model_price: ModelPrice, snap: _Snapshot, tier: int, unit_type: str
    ) -> tuple[float | None, float | None]:
        """USD per unit of ``unit_type`` (input, output); None where genai-prices has no price."""
        # Total input that selects the tier: tier 0 = below the first threshold.
        base_input = snap.tiers[tier - 1] + 1 if tier > 0 else (snap.tiers[0] if snap.tiers else _PROBE)

        def cost(**usage: int) -> Decimal | None:
            try:
                return model_price.calc_price(PriceUsage(**usage))["total_price"]
            except (ValueError, KeyError):
                return None

        if unit_type in _COUNT_UNITS:
            direction, usage_key = _COUNT_UNITS[unit_type]
            c = cost(**{usage_key: _PROBE})
            value = float(c / _PROBE) if c else None
            return (value, None) if direction == "input" else (None, value)
        in_coef = out_coef = None
        if unit_type in _INPUT_PROBES:
            c = cost(input_tokens=base_input, **{k: base_input for k in _INPUT_PROBES[unit_type]})
            in_coef = float(c / base_input) if c else None
        if unit_type in _OUTPUT_PROBES:
            base = cost(input_tokens=base_input) if snap.tiers else Decimal(0)
            c = cost(
                input_tokens=base_input if snap.tiers else 0,
                output_tokens=_PROBE,
                **{k: _PROBE for k in _OUTPUT_PROBES[unit_type]},
            )
            out_coef = float((c - base) / _PROBE) if c is not None and base is not None and c > base else None
        return in_coef, out_coef

    # --- catalog reads (system categories) -------------------------------------------------
    def system_resources(self, category: str) -> list[str]:
        """The model ids genai-prices has for a system category's providers (first provider wins)."""
        seen: dict[str, None] = {}
        by_id = {p.id: p for p in self._snapshot.providers}
        for provider_id in CATEGORY_PROVIDERS.get(category, ()):
            provider = by_id.get(provider_id)
            for model in provider.models if provider else ():
                seen.setdefault(model.id, None)
        return sorted(seen)

    def describe(
        self, category: str, resource: str, when: datetime
    ) -> tuple[str, dict[str, dict[str, float | None]]] | None:
        """(resource_id, USD per unit {unit: {input_price, output_price}}) of a system resource at ``when``."""
        found = self._find_model(category, resource)
        if isinstance(found, str):
            return None
        model_price, snap = self._price_snapshot(*found, when)
        units: dict[str, dict[str, float | None]] = {}
        for unit_type in {*_INPUT_PROBES, *_OUTPUT_PROBES, *_COUNT_UNITS}:
            in_coef, out_coef = self._coefficient(model_price, snap, 0, unit_type)
            if in_coef is not None or out_coef is not None:
                units[unit_type] = {"input_price": in_coef, "output_price": out_coef}
        return snap.resource_id, dict(sorted(units.items()))

    # --- public API ----------------------------------------------------------------------
    def price(
        self,
        category: str,
        resource: str | None,
        units: dict[str, dict[str, int]],
        when: datetime,
        scope: str | None = None,
    ) -> PriceResult:
        """Price ``units`` of ``resource`` in ``category`` at the price in force at ``when`` (in ``scope``)."""
        if not resource:
            return PriceResult(priced=False, unpriced_reason="event has no resource", unknown_units=dict(units))
        found = self._find_model(category, resource, scope)
        if isinstance(found, str):
            return PriceResult(priced=False, unpriced_reason=found, unknown_units=dict(units))
        provider, model = found
        model_price, snap = self._price_snapshot(provider, model, when)
        tier = 0
        if snap.tiers:
            total_input = 0
            large = False
            for unit_type, counts in units.items():
                total_input += counts.get("input", 0)
                large = large or unit_type.endswith(LARGE_CONTEXT_SUFFIX)
            if large:
                total_input = max(total_input, snap.tiers[-1] + 1)
            tier = sum(1 for start in snap.tiers if total_input > start)
        input_cost = output_cost = 0.0
        unknown: dict[str, dict[str, int]] = {}
        for unit_type, counts in units.items():
            n_in = counts.get("input", 0)
            n_out = counts.get("output", 0)
            if not n_in and not n_out:
                continue
            base_type, _ = split_large_context(unit_type)
            in_coef, out_coef = self._coefficient(model_price, snap, tier, base_type)
            if n_in:
                if in_coef is None:
                    unknown.setdefault(unit_type, {})["input"] = n_in
                else:
                    input_cost += n_in * in_coef
            if n_out:
                if out_coef is None:
                    unknown.setdefault(unit_type, {})["output"] = n_out
                else:
                    output_cost += n_out * out_coef
        return settle(
            PriceResult(
                priced=True,
                input_cost=input_cost,
                output_cost=output_cost,
                resource_id=snap.resource_id,
                unknown_units=unknown,
                resource_version=snap.description,
            ),
            units,
            resource,
        )


def price_custom(
    resource_id: str, prices: dict[str, dict[str, float | None]], units: dict[str, dict[str, int]], resource: str
) -> PriceResult:
    """Price ``units`` with a custom resource version's per-unit USD prices."""
    input_cost = output_cost = 0.0
    unknown: dict[str, dict[str, int]] = {}
    for unit_type, counts in units.items():
        unit_prices = prices.get(unit_type) or {}
        for direction, key in (("input", "input_price"), ("output", "output_price")):
            n = counts.get(direction, 0)
            if not n:
                continue
            price = unit_prices.get(key)
            if price is None:
                unknown.setdefault(unit_type, {})[direction] = n
            elif direction == "input":
                input_cost += n * price
            else:
                output_cost += n * price
    result = PriceResult(
        priced=True, input_cost=input_cost, output_cost=output_cost, resource_id=resource_id, unknown_units=unknown
    )
    return settle(result, units, resource)


def settle(result: PriceResult, units: dict[str, dict[str, int]], resource: str) -> PriceResult:
    """An event none of whose units has a price is unpriced (its cost is unknown, never $0)."""
    if not result.unknown_units:
        return result
    counted = sum(1 for c in units.values() for n in c.values() if n)
    unknown = sum(len(c) for c in result.unknown_units.values())
    if unknown < counted:
        return result  # priced in part: the rest is listed in unknown_units (and warned about)
    names = ", ".join(sorted(result.unknown_units))
    return PriceResult(
        priced=False,
        unknown_units=result.unknown_units,
        unpriced_reason=f"no price for units {names} of resource {resource!r}",
    )
