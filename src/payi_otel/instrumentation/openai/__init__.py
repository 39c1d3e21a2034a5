"""OpenAI and Azure OpenAI instrumentation (openai 1.30 through 3.x).

What is wrapped is the table in :mod:`._targets`: resource-class methods patched in their defining
modules (so every client, and the SDK's ``with_raw_response`` / ``with_streaming_response`` wrappers
that call them, go through us), feature-probed and version-bounded. What a call means is described
by an :class:`._operation.OpenAIOperation` (operation name, where usage lives, how a stream is read);
the span itself belongs to :mod:`payi_otel.core`. The other modules: :mod:`._request` (client and
request side), :mod:`._usage` (usage reports), :mod:`._results` (non-streamed results),
:mod:`._streams` (stream chunks), :mod:`._raw` (stream helpers' close) and :mod:`._content` (message
content in the conventions' schema, :mod:`payi_otel.messages`).

Units (through :func:`payi_otel.units.to_units`):

* chat / legacy completions / Responses: ``text.input`` = prompt - cached - cache writes - audio in;
  ``text_cache_read.input`` = cached; ``text_cache_write.input`` = cache writes;
  ``text.output`` = completion - reasoning - audio out; ``reasoning.output``; ``audio.input/output``.
* embeddings: ``text.input`` = prompt tokens.
* images: token-billed models (usage reported) -> ``text.input`` (prompt text tokens),
  ``vision.input`` (input image tokens), ``vision.output`` (generated image tokens);
  per-image models (no usage) -> ``image.output`` = number of images returned.
* audio transcriptions/translations: token usage -> ``audio.input`` (+ ``text.input``/``text.output``);
  duration-billed results and speech report no tokens and are marked ``payi.usage.complete=false``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation._stainless import error_info
from payi_otel.instrumentation._wrapping import Target
from payi_otel.settings import parse_bool

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

ENV_AZURE_DEPLOYMENTS = "PAYI_AZURE_DEPLOYMENTS"
ENV_INJECT_STREAM_USAGE = "PAYI_OPENAI_INJECT_STREAM_USAGE"


# --- configuration --------------------------------------------------------------------------
def parse_azure_deployments(value: str, source: str = ENV_AZURE_DEPLOYMENTS) -> dict[str, str]:
    """Parse ``"dep=model,dep2=model2"``; raises ValueError naming ``source`` and the rule."""
    mapping: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        dep, sep, model = item.partition("=")
        if not sep or not dep.strip() or not model.strip():
            raise ValueError(
                f"{source}: entry {item!r} is invalid; expected comma-separated 'deployment=model' pairs, "
                "e.g. 'my-gpt4o=gpt-4o,embed=text-embedding-3-small'"
            )
        mapping[dep.strip()] = model.strip()
    return mapping


def _env_setting(name: str, parse: Callable[[str], _T], default: _T) -> _T:
    """An environment setting; a bad value is logged (naming the variable and the rule) and the default
    used, so that a typo never turns the instrumentation off under ``opentelemetry-instrument``."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        logger.error("%s; using the default (%r)", exc, default)
        return default


def _azure_mapping(value: Any) -> dict[str, str]:
    if value is None:
        return _env_setting(ENV_AZURE_DEPLOYMENTS, parse_azure_deployments, {})
    if isinstance(value, str):
        return parse_azure_deployments(value, "azure_deployments")
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise ValueError("azure_deployments: must be a mapping of deployment name to model name (str -> str)")


def _sdk_accepts_stream_options(version: str | None) -> bool:
    """openai before 1.26 has no ``stream_options`` parameter: injecting it would raise TypeError in the caller."""
    try:
        return version is not None and Version(version) >= Version("1.26")
    except InvalidVersion:  # pragma: no cover - an SDK we cannot read: do not touch the request
        return False


class OpenAIInstrumentor(ProviderInstrumentor):
    """Instruments OpenAI and Azure OpenAI clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``capture_content``
    (bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), ``azure_deployments``
    (``{"deployment": "model"}`` or ``"dep=model,..."``; default ``PAYI_AZURE_DEPLOYMENTS``) and
    ``inject_stream_usage`` (bool; default ``PAYI_OPENAI_INJECT_STREAM_USAGE``, true).
    """

    _instruments = ("openai >= 1.30, < 4",)  # the oldest release the test matrix has passed on

    _package = _distribution = "openai"

    def _prepare(self, kwargs: Mapping[str, Any]) -> Callable[[str | None], list[Target]]:
        inject = kwargs.get("inject_stream_usage")
        if inject is None:
            inject = _env_setting(ENV_INJECT_STREAM_USAGE, lambda raw: parse_bool(raw, ENV_INJECT_STREAM_USAGE), True)
        else:
            inject = parse_bool(inject, "inject_stream_usage")
        azure = _azure_mapping(kwargs.get("azure_deployments"))
        core = self._span_core(kwargs, error_info)

        def build(version: str | None) -> list[Target]:
            from ._operation import State  # the instrumentation's modules load with the SDK, not before
            from ._request import load_sdk_types
            from ._targets import targets

            load_sdk_types()
            return targets(State(core, azure, inject and _sdk_accepts_stream_options(version), version or "unknown"))

        return build


__all__ = ["OpenAIInstrumentor", "parse_azure_deployments"]
