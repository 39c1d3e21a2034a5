"""Long-context thresholds per model agree with the price catalog (genai-prices) the service prices with."""

from __future__ import annotations

import re

import pytest
from _anthropic_helpers import catalog_threshold
from genai_prices import data_snapshot

from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.instrumentation.bedrock import resolve

CATALOG = data_snapshot.get_snapshot()
# Claude from Anthropic's own price list (the one it is billed by wherever it is served), Gemini from Google's.
MODELS = [(model.id, provider.id) for provider in CATALOG.providers for model in provider.models
          if (provider.id, model.id.split("-")[0]) in {("anthropic", "claude"), ("google", "gemini")}]  # fmt: skip


def test_the_catalog_lists_tiered_models():
    assert sum(catalog_threshold(model, provider) is not None for model, provider in MODELS) >= 8


@pytest.mark.parametrize(("model", "provider"), MODELS, ids=[m for m, _ in MODELS])
def test_threshold_of_every_catalog_model(model, provider):
    assert long_context_threshold(model) == catalog_threshold(model, provider)


@pytest.mark.parametrize(
    "name",
    ["claude-sonnet-4-5-20250929", "claude-sonnet-4.5", "claude-sonnet-4-5@20250929", "claude-opus-4-6",
     "claude-haiku-5-5-20260101", "models/gemini-2.5-pro", "gemini-2.5-pro-preview-06-05", "claude-3-5-sonnet-20240620",
     "claude-sonnet-4-20250514", "gemini-2.5-pro-tts", "gpt-4o"],
)  # fmt: skip
def test_names_the_model_is_served_under(name):
    """Dated, dotted, Vertex (@) and Gemini API (models/) spellings price like the catalog's own match."""
    expected = catalog_threshold(name.removeprefix("models/"), "google" if "gemini" in name else "anthropic")
    assert long_context_threshold(name) == expected


@pytest.mark.parametrize(
    "model_id", ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0",
                 "global.anthropic.claude-haiku-5-5-v1:0", "eu.anthropic.claude-opus-4-6-v1"],
)  # fmt: skip
def test_bedrock_model_ids(model_id):
    """A Claude model served by Bedrock has Anthropic's threshold (the model's own long-context pricing; the
    catalog's AWS list may price it flat, and then the service prices the long-context units at that one rate)."""
    resource, _ = resolve(model_id)
    base = re.sub(r"-v\d+(:\d+)?$", "", resource.removeprefix("anthropic."))
    assert long_context_threshold(resource) == catalog_threshold(base)
