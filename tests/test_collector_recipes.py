"""The collector recipes in exporters/collector/ are consistent with the receivers they feed.

No collector with an ``otlp`` receiver installs here, so the recipes are checked structurally: each
pipeline filters to GenAI spans, sends the key header, compresses with gzip and queues on file storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from payi_otel import protocol as P

RECIPES = Path(__file__).parent.parent / "exporters" / "collector"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPES / name).read_text())


@pytest.mark.parametrize("name, exporter", [("local-service.yaml", "otlphttp/payi"), ("relay.yaml", "otlp/payi-relay")])
def test_recipe_pipeline_sends_only_genai_spans_with_the_key_durably(name: str, exporter: str) -> None:
    config = load(name)
    pipeline = config["service"]["pipelines"]["traces/payi"]
    assert pipeline["exporters"] == [exporter]
    assert pipeline["processors"][0] == "filter/genai-only"  # before batching
    condition = config["processors"]["filter/genai-only"]["traces"]["span"][0]
    for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "llm.provider"):
        assert f'attributes["{key}"] == nil' in condition
    settings = config["exporters"][exporter]
    assert settings["compression"] == "gzip"
    assert {k.lower() for k in settings["headers"]} == {P.API_KEY.lower()}
    storage = settings["sending_queue"]["storage"]
    assert storage in config["extensions"] and storage in config["service"]["extensions"]
    assert settings["retry_on_failure"]["max_elapsed_time"] == 0
    if exporter.startswith("otlphttp"):
        assert settings["traces_endpoint"].endswith("/v1/traces")
    else:
        assert list(settings["headers"]) == [P.API_KEY.lower()]  # gRPC metadata keys are lower-case


def test_recipes_readme_says_they_were_not_run_against_a_real_collector() -> None:
    text = (RECIPES / "README.md").read_text()
    assert "written for otelcol-contrib" in text and "were not run against a real collector" in text
