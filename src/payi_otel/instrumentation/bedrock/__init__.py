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

from typing import Any

from payi_otel.instrumentation._instrumentor import ProviderInstrumentor
from payi_otel.instrumentation._wrapping import Target

from ._calls import BedrockCalls
from ._errors import error_info
from ._resources import resolve


def _botocore_version() -> str:
    try:
        from botocore import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


class BedrockInstrumentor(ProviderInstrumentor):
    """Instruments AWS Bedrock runtime clients (boto3 / botocore; aiobotocore where installed).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (content
    events), ``capture_content`` (a mode or bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _instruments = ("botocore >= 1.34.116",)  # the first release with Converse / ConverseStream

    def _instrument(self, **kwargs: Any) -> None:
        core = self._span_core(kwargs, error_info)
        calls = BedrockCalls(core, f"botocore/{_botocore_version()}")
        self._wrap(
            [
                Target("botocore.client", "BaseClient", "_make_api_call", calls),
                Target("aiobotocore.client", "AioBaseClient", "_make_api_call", calls),
            ]
        )


__all__ = ["BedrockInstrumentor", "error_info", "resolve"]
