"""Shared pieces for the Anthropic tests: replayed real clients and the recorded Anthropic interactions."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import anthropic._base_client

from payi_otel.replay import Cassette, Interaction

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
