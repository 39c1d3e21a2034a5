"""payi_otel.fastjson writes exactly what the standard library's encoder writes."""

from __future__ import annotations

import json
import math

import pytest

from payi_otel import fastjson

VALUES = [
    {},
    [],
    "plain",
    'naïve ☃ "quoted" \\ \n\t\u0001',
    0,
    -12,
    2**70,
    1.5,
    1e-7,
    math.inf,
    -math.inf,
    True,
    None,
    {"location": "New York, NY", "unit": "fahrenheit"},
    [{"name": "get_weather", "arguments": '{"location": "Paris"}'}, {"name": "", "arguments": ""}],
    {"nested": {"list": [1, 2.25, None, False, "ü"], "empty": {}}, 3: "int key", 2.5: "float key", None: "none key"},
    (1, "tuple"),
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_is_json_dumps(value: object) -> None:
    assert fastjson.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", VALUES)
def test_compact_is_the_compact_encoder(value: object) -> None:
    assert fastjson.compact(value) == json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def test_nan_and_unknown_types() -> None:
    assert fastjson.dumps([math.nan]) == json.dumps([math.nan])
    assert fastjson.compact({"at": object}) == json.dumps({"at": object}, default=str, separators=(",", ":"),
                                                          ensure_ascii=False)  # fmt: skip
    with pytest.raises(TypeError):
        fastjson.dumps({"at": object()})
