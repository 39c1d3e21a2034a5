"""The one place that turns normalized usage into Pay-i units.

Instrumentors normalize each provider's usage report into :class:`Usage` (totals as the GenAI
semantic conventions define them: input includes cache reads/writes, audio, image and video tokens;
output includes reasoning, audio, image and video tokens). :func:`to_units` then applies Pay-i's
arithmetic:

* ``text.input``  = input - every unit counted inside the input total (cache reads and writes, audio,
  image and video tokens)
* ``text.output`` = output - every unit counted inside the output total (reasoning, audio, image, video)
* every other field of :class:`Usage` is one Pay-i unit direction (``text_cache_write_1h.input``,
  ``video.output``, ``web_search_request.output``, ...), declared on the field itself with
  :func:`unit`: adding a unit Pay-i prices is adding one field;
* ``modalities``: further token units a provider reports per modality beside the totals (e.g.
  ``document.input``) with no field of their own. They are part of the totals, so ``text.input`` /
  ``text.output`` exclude them and ``text_cache_read.input`` excludes the ``*_cache_read`` ones.
* with ``large_context`` every token unit gets the ``_large_context`` suffix (the per-request and
  per-image counts, e.g. ``image`` and ``web_search_request``, do not).

The exporter uses the same function for spans that carry only semantic-convention token counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

Units = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """How one :class:`Usage` field becomes a Pay-i unit direction."""

    unit: str  # Pay-i unit name, e.g. "text_cache_write_1h"
    direction: str  # "input" or "output"
    within: bool  # counted inside the input/output token total (so subtracted from ``text``)
    semconv: bool  # a gen_ai.usage.* attribute carries it (the exporter can derive the unit)
    large_context: bool  # priced differently above the model's large-context threshold


def unit(name: str, direction: str, *, within: bool = True, semconv: bool = False, large_context: bool = True) -> Any:
    """Declare a :class:`Usage` field as the ``direction`` of Pay-i unit ``name``."""
    spec = UnitSpec(name, direction, within, semconv, large_context)
    return field(default=0, metadata={"payi_unit": spec})


@dataclass(slots=True)
class Usage:
    """Normalized usage of one provider call. ``None`` means "not reported"."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = unit("text_cache_read", "input", semconv=True)
    cache_write_tokens: int = unit("text_cache_write", "input", semconv=True)  # 5-minute (default) cache
    cache_write_1h_tokens: int = unit("text_cache_write_1h", "input")
    reasoning_tokens: int = unit("reasoning", "output", semconv=True)
    input_audio_tokens: int = unit("audio", "input")
    output_audio_tokens: int = unit("audio", "output")
    input_image_tokens: int = unit("vision", "input")
    output_image_tokens: int = unit("vision", "output")
    input_video_tokens: int = unit("video", "input")
    output_video_tokens: int = unit("video", "output")
    cache_read_audio_tokens: int = unit("audio_cache_read", "input")
    cache_read_image_tokens: int = unit("vision_cache_read", "input")
    cache_read_video_tokens: int = unit("video_cache_read", "input")
    # Counts that are not tokens: never part of the token totals.
    images: int = unit("image", "output", within=False, large_context=False)
    web_search_requests: int = unit("web_search_request", "output", within=False, large_context=False)
    # Bedrock guardrail policy units (per policy, per assessment), named as Pay-i prices them.
    guardrail_topic: int = unit("guardrail_topic", "input", within=False, large_context=False)
    guardrail_content: int = unit("guardrail_content", "input", within=False, large_context=False)
    guardrail_content_image: int = unit("guardrail_content_image", "input", within=False, large_context=False)
    guardrail_word_free: int = unit("guardrail_word_free", "input", within=False, large_context=False)
    guardrail_sensitive_information: int = unit(
        "guardrail_sensitive_information", "input", within=False, large_context=False
    )
    guardrail_sensitive_information_free: int = unit(
        "guardrail_sensitive_information_free", "input", within=False, large_context=False
    )
    guardrail_contextual_grounding: int = unit(
        "guardrail_contextual_grounding", "input", within=False, large_context=False
    )
    guardrail_automated_reasoning: int = unit(
        "guardrail_automated_reasoning", "input", within=False, large_context=False
    )
    large_context: bool = False
    modalities: Units | None = None  # further per-modality token units included in the totals (module doc)

    @property
    def reported(self) -> bool:
        """True when the provider reported any usage at all."""
        return (
            self.input_tokens is not None
            or self.output_tokens is not None
            or any(_counts(self))
            or bool(self.modalities)
        )

    def needs_units(self) -> bool:
        """True when the semantic-convention token counts alone do not give this usage's Pay-i units."""
        return self.large_context or bool(self.modalities) or any(_beyond_semconv(self))

    def merge(self, other: Usage) -> None:
        """Overlay what ``other`` reports (usage that arrives in several stream events): every field
        ``other`` has a value for (not ``None``, not 0, not ``False``) replaces this one's."""
        for name in _FIELD_NAMES:
            value = getattr(other, name)
            if value is None or value == 0 or value is False:
                continue
            setattr(self, name, value)


_FIELD_NAMES = tuple(f.name for f in fields(Usage))
_SLOTS: tuple[tuple[str, UnitSpec], ...] = tuple(
    (f.name, f.metadata["payi_unit"]) for f in fields(Usage) if "payi_unit" in f.metadata
)
_COUNT_UNITS = frozenset(spec.unit for _, spec in _SLOTS if not spec.large_context)  # no large-context price
_CACHE_READ_SUFFIX = "_cache_read"


def _getter(names: list[str]) -> Any:
    """A fast reader of ``names`` that always returns a tuple."""
    if not names:
        return lambda usage: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda usage: (one(usage),)
    return attrgetter(*names)


_counts = _getter([name for name, spec in _SLOTS if not spec.within])
_beyond_semconv = _getter([name for name, spec in _SLOTS if not spec.semconv])
_within_input = _getter([name for name, spec in _SLOTS if spec.within and spec.direction == "input"])
_within_output = _getter([name for name, spec in _SLOTS if spec.within and spec.direction == "output"])


def unit_names() -> frozenset[str]:
    """Every Pay-i unit name :func:`to_units` can produce (without the large-context suffix)."""
    return frozenset({"text"} | {spec.unit for _, spec in _SLOTS})


def to_units(usage: Usage) -> Units:
    """Pay-i units for ``usage``; ``{}`` when nothing was reported."""
    units: Units = {}
    modalities = usage.modalities or {}
    mod_in = mod_out = mod_cache = 0
    for key, counts in modalities.items():
        if key.endswith(_CACHE_READ_SUFFIX):
            mod_cache += counts.get("input", 0)
        else:
            mod_in += counts.get("input", 0)
        mod_out += counts.get("output", 0)
    if usage.input_tokens is not None or usage.output_tokens is not None:
        text_in = (usage.input_tokens or 0) - sum(_within_input(usage)) - mod_in
        text_out = (usage.output_tokens or 0) - sum(_within_output(usage)) - mod_out
        units["text"] = {"input": max(text_in, 0), "output": max(text_out, 0)}
    for name, spec in _SLOTS:
        value = getattr(usage, name)
        if name == "cache_read_tokens":
            value -= mod_cache
        if value > 0:
            units.setdefault(spec.unit, {})[spec.direction] = int(value)
    for key, counts in modalities.items():
        for direction in ("input", "output"):
            value = counts.get(direction, 0)
            if value > 0:
                directions = units.setdefault(key, {})
                directions[direction] = directions.get(direction, 0) + int(value)
    for directions in units.values():
        directions.setdefault("input", 0)
        directions.setdefault("output", 0)
    if usage.large_context:
        units = {(k if k in _COUNT_UNITS else k + "_large_context"): v for k, v in units.items()}
    return units
