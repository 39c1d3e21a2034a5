"""Shared pieces for the Anthropic tests: replayed real clients and the recorded Anthropic interactions."""

from __future__ import annotations

import base64
import importlib
import math
import re
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import anthropic._base_client

from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"

# anthropic 2.x is built on httpx2, older majors on httpx: transports and clients come from the right one.
HTTP_LIBRARY = "httpx2" if hasattr(anthropic._base_client, "httpx2") else "httpx"
http = importlib.import_module(HTTP_LIBRARY)
VERSION = tuple(int(p) for p in anthropic.__version__.split(".")[:2])


def anthropic_cassettes() -> list[Path]:
    return sorted(CASSETTES.glob("*/anthropic/*.yaml"))


def is_anthropic(interaction: Interaction) -> bool:
    return urlsplit(interaction.uri).netloc.endswith("anthropic.com")


def client_for(interaction: Interaction, cassette: Cassette, *, is_async: bool = False, **kwargs: Any) -> Any:
    """A real Anthropic client whose HTTP transport replays ``cassette``."""
    parts = urlsplit(interaction.uri)
    transport = cassette.transport(HTTP_LIBRARY)
    http_client = (http.AsyncClient if is_async else http.Client)(transport=transport)
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(api_key="test", base_url=f"{parts.scheme}://{parts.netloc}", http_client=http_client, max_retries=0,
               **kwargs)  # fmt: skip


def load(name: str) -> tuple[Cassette, Interaction]:
    """The cassette named ``name`` (file stem) and its first Anthropic interaction."""
    path = next(p for p in anthropic_cassettes() if p.stem == name)
    cassette = Cassette.load(path)
    return cassette, next(i for i in cassette.interactions if is_anthropic(i))


def call_kwargs(method: Any, body: Any) -> dict[str, Any]:
    """The recorded request body as SDK keyword arguments (unknown keys go through ``extra_body``)."""
    import inspect

    body = dict(body or {})
    params = inspect.signature(method).parameters
    kwargs = {k: v for k, v in body.items() if k in params and k not in ("extra_body", "extra_headers")}
    extra = {k: v for k, v in body.items() if k not in kwargs}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


# --- expectations computed from the recorded bodies ------------------------------------------------
def recorded_usage(interaction: Interaction) -> dict[str, Any] | None:
    """The usage Anthropic reported: the response's, or message_start's overlaid by message_delta's."""
    if (interaction.header("content-type") or "").startswith("text/event-stream"):
        usage: dict[str, Any] | None = None
        for event in interaction.sse_events():
            if event.get("type") == "message_start":
                usage = dict(event["message"].get("usage") or {})
            elif event.get("type") == "message_delta" and usage is not None:
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        return usage
    return interaction.json().get("usage")


def catalog_threshold(model: str | None, provider_id: str = "anthropic") -> int | None:
    """The prompt size above which the price catalog (genai-prices) prices ``model`` at a higher rate."""
    from genai_prices import data_snapshot
    from genai_prices.types import TieredPrices

    if not model:
        return None
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    prices = info.prices if isinstance(info.prices, list) else [info.prices]
    starts = {tier.start for p in prices for v in vars(getattr(p, "prices", p)).values()
              if isinstance(v, TieredPrices) for tier in v.tiers}  # fmt: skip
    return min(starts) if starts else None


def image_tokens(width: int, height: int) -> int:
    """Anthropic's documented image cost: width x height / 750 tokens, after scaling down (aspect kept) to a
    long edge of at most 1568 px and at most ~1600 tokens (1.2 megapixels)."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1600 * 750 / (width * height)))
    return math.ceil(int(width * scale) * int(height * scale) / 750)


def recorded_image_tokens(body: dict[str, Any]) -> int:
    """Image tokens of a recorded request's base64 images (PNG from IHDR, JPEG from its first SOF
    segment), measured here independently of the instrumentation. An image given by URL or file id
    cannot be measured: then nothing is split from text (0)."""
    total = 0
    for message in body.get("messages") or ():
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block.get("type") != "image":
                continue
            if block["source"]["type"] != "base64":
                return 0
            data = base64.b64decode(block["source"]["data"])
            if data[1:4] == b"PNG":
                width, height = struct.unpack(">II", data[16:24])
            else:
                sof = re.search(rb"\xff[\xc0-\xc2].{3}(.{2})(.{2})", data, re.DOTALL)
                assert sof is not None, "recorded JPEG without a frame header"
                height, width = struct.unpack(">H", sof.group(1))[0], struct.unpack(">H", sof.group(2))[0]
            total += image_tokens(width, height)
    return total


def expected_units(usage: dict[str, Any], model: str | None = None, image_tokens: int = 0) -> dict[str, dict[str, int]]:
    """Pay-i units of an Anthropic usage report (the rules of Pay-i's unit table, applied by hand): long
    context above the catalog's threshold for ``model``; ``image_tokens`` of the input priced as vision."""
    iterations = usage.get("iterations")
    entries = [e for e in iterations if e.get("type") != "advisor_message"] if iterations else [usage]
    text_in = sum(e.get("input_tokens") or 0 for e in entries)
    read = sum(e.get("cache_read_input_tokens") or 0 for e in entries)
    write_5m = sum((e["cache_creation"] or {}).get("ephemeral_5m_input_tokens", 0) if "cache_creation" in e
                   else e.get("cache_creation_input_tokens") or 0 for e in entries)  # fmt: skip
    write_1h = sum((e.get("cache_creation") or {}).get("ephemeral_1h_input_tokens", 0) for e in entries)
    output = sum(e.get("output_tokens") or 0 for e in entries)
    searches = (usage.get("server_tool_use") or {}).get("web_search_requests") or 0
    threshold = catalog_threshold(model)
    large = threshold is not None and max((e.get("input_tokens") or 0) + (e.get("cache_read_input_tokens") or 0)
                + (e.get("cache_creation_input_tokens") or 0) for e in entries) > threshold  # fmt: skip
    suffix = "_large_context" if large else ""
    vision = min(image_tokens, text_in)
    units = {f"text{suffix}": {"input": text_in - vision, "output": output}}
    if vision:
        units[f"vision{suffix}"] = {"input": vision, "output": 0}
    for name, value in (("text_cache_read", read), ("text_cache_write", write_5m), ("text_cache_write_1h", write_1h)):
        if value:
            units[name + suffix] = {"input": value, "output": 0}
    if searches:
        units["web_search_request"] = {"input": 0, "output": searches}
    return units


def expected_tool_calls(interaction: Interaction) -> list[dict[str, str]] | None:
    """Every tool_use block of the recorded response, arguments as ``json.dumps`` of the input."""
    import json

    if (interaction.header("content-type") or "").startswith("text/event-stream"):
        blocks: dict[int, list[Any]] = {}
        for event in interaction.sse_events():
            if event.get("type") == "content_block_start" and event["content_block"]["type"] == "tool_use":
                blocks[event["index"]] = [event["content_block"]["name"], ""]
            elif event.get("type") == "content_block_delta" and event["index"] in blocks:
                blocks[event["index"]][1] += event["delta"].get("partial_json", "")
        calls = [{"name": n, "arguments": json.dumps(json.loads(a or "{}"))} for _, (n, a) in sorted(blocks.items())]
    else:
        content = interaction.json().get("content") or []
        calls = [{"name": b["name"], "arguments": json.dumps(b["input"])} for b in content if b["type"] == "tool_use"]
    return calls or None
