"""Usage -> Pay-i units: the arithmetic, the unit table declared on Usage's fields, and merging."""

from __future__ import annotations

from dataclasses import fields

import pytest

from payi_otel.units import Usage, to_units, unit_names


def test_text_is_what_no_other_unit_counts():
    usage = Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=100, cache_write_tokens=50,
        cache_write_1h_tokens=25, input_audio_tokens=40, input_image_tokens=30, input_video_tokens=20,
        reasoning_tokens=200, output_audio_tokens=10, output_video_tokens=5,
    )  # fmt: skip
    units = to_units(usage)
    assert units["text"] == {"input": 1000 - 100 - 50 - 25 - 40 - 30 - 20, "output": 500 - 200 - 10 - 5}
    assert units["text_cache_write_1h"] == {"input": 25, "output": 0}
    assert units["video"] == {"input": 20, "output": 5}
    assert units["vision"] == {"input": 30, "output": 0}


def test_counts_are_not_tokens():
    usage = Usage(input_tokens=10, output_tokens=5, web_search_requests=3, images=2)
    units = to_units(usage)
    assert units["text"] == {"input": 10, "output": 5}  # counts never come out of the token totals
    assert units["web_search_request"] == {"input": 0, "output": 3}
    assert units["image"] == {"input": 0, "output": 2}
    assert Usage(web_search_requests=1).reported and not Usage().reported


def test_large_context_suffix_only_where_pay_i_prices_it():
    units = to_units(Usage(input_tokens=300_000, output_tokens=5, cache_read_tokens=10, input_image_tokens=7,
                           web_search_requests=1, large_context=True))  # fmt: skip
    assert set(units) == {"text_large_context", "text_cache_read_large_context", "vision_large_context",
                          "web_search_request"}  # fmt: skip


@pytest.mark.parametrize("field", [f for f in fields(Usage) if "payi_unit" in f.metadata], ids=lambda f: f.name)
def test_every_declared_unit_reaches_the_event_and_the_span(field):
    """A unit declared on a Usage field needs no other change: it is emitted, subtracted from text when
    it is a token count, and makes the span carry payi.units.* when semconv cannot say it."""
    spec = field.metadata["payi_unit"]
    usage = Usage(input_tokens=100, output_tokens=100, **{field.name: 7})
    units = to_units(usage)
    assert units[spec.unit][spec.direction] == 7
    text = units["text"][spec.direction]
    assert text == (93 if spec.within else 100)
    assert usage.needs_units() is (not spec.semconv)
    assert spec.unit in unit_names()


def test_merge_overlays_what_the_later_report_has():
    start = Usage(input_tokens=12, output_tokens=1, cache_read_tokens=5, cache_write_1h_tokens=3)
    start.merge(Usage(input_tokens=None, output_tokens=40, web_search_requests=2))
    assert start == Usage(input_tokens=12, output_tokens=40, cache_read_tokens=5, cache_write_1h_tokens=3,
                          web_search_requests=2)  # fmt: skip
    start.merge(Usage(input_tokens=15, large_context=True))
    assert start.input_tokens == 15 and start.large_context and start.output_tokens == 40
