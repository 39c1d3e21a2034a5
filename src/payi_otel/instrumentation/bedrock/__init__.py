"""AWS Bedrock runtime instrumentation (boto3 / botocore, and aiobotocore where installed).

boto3 builds its client classes at run time, one per client, so there is no importable
``module.Class.method`` to patch per operation. Every botocore client, whenever and however it was
created (``boto3.client``, a ``boto3.Session``, ``botocore.session``, before or after ``instrument()``),
sends its requests through ``BaseClient._make_api_call(operation_name, params)``; aiobotocore's
``AioBaseClient`` overrides it with a coroutine. Wrapping those two methods instruments each Bedrock
runtime client exactly once, in the caller's own frame (so the business context in effect there is
the one recorded), and costs other AWS services one dictionary lookup.

Operations: ``Converse``, ``ConverseStream``, ``InvokeModel``, ``InvokeModelWithResponseStream``.
Category ``system.aws.bedrock``; resource = the model the ``modelId`` names (:mod:`._resources`);
units from the billed token-count headers, the body or the stream's final event (:mod:`._usage`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation._wrapping import Target

from ._errors import error_info
from ._resources import resolve


class BedrockInstrumentor(ProviderInstrumentor):
    """Instruments AWS Bedrock runtime clients (boto3 / botocore; aiobotocore where installed).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _instruments = ("botocore >= 1.34.116",)  # the first release with Converse / ConverseStream

    _package = _distribution = "botocore"

    def _prepare(self, kwargs: Mapping[str, Any]) -> Callable[[str | None], list[Target]]:
        core = self._span_core(kwargs, error_info)

        def build(version: str | None) -> list[Target]:
            from ._calls import BedrockCalls  # the instrumentation's modules load with botocore, not before

            calls = BedrockCalls(core, f"botocore/{version or 'unknown'}")
            return [  # the aiobotocore row is wrapped when aiobotocore is imported
                Target("botocore.client", "BaseClient", "_make_api_call", calls),
                Target("aiobotocore.client", "AioBaseClient", "_make_api_call", calls),
            ]

        return build


__all__ = ["BedrockInstrumentor", "error_info", "resolve"]
