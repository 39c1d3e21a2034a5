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

import logging
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]  # module is marked untyped
    BaseInstrumentor,
)

from payi_otel.core import Call, SpanCore
from payi_otel.instrumentation._wrapping import Target, WrapSet

from ._body import Body, aread_body
from ._calls import INVOKE, OPERATIONS, BedrockCalls
from ._errors import error_info, fail
from ._resources import resolve

logger = logging.getLogger(__name__)

_instruments = ("botocore >= 1.34.116",)  # the first release with Converse / ConverseStream


def _operation(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    if len(args) >= 2:
        return args[0], args[1]
    return kwargs.get("operation_name", args[0] if args else None), kwargs.get("api_params")


def _begin(calls: BedrockCalls, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    operation, params = _operation(args, kwargs)
    if operation not in OPERATIONS or not isinstance(params, dict):
        return None
    try:
        return calls.begin(instance, operation, params)
    except Exception:
        logger.debug("instrumentation failed before the call; calling through", exc_info=True)
        return None


def _done(calls: BedrockCalls, call: Call, result: Any, body: Body | None = None) -> Any:
    try:
        return calls.finish(call, result, body)
    except Exception:
        logger.debug("instrumentation failed after the call", exc_info=True)
        call.end()
        return result


def _failed(call: Call, exc: BaseException) -> None:
    try:
        fail(call, exc)
    except Exception:  # pragma: no cover - Call.fail guards itself
        logger.debug("failed to record provider error", exc_info=True)


def _wrappers(calls: BedrockCalls) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The sync and async ``_make_api_call`` wrappers; they differ only in awaiting the original."""

    def sync_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(calls, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        token = call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(token)
            _failed(call, exc)
            raise
        call.deactivate(token)
        return _done(calls, call, result)

    async def run_async(wrapped: Callable[..., Any], call: Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = call.activate()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(token)
            _failed(call, exc)
            raise
        call.deactivate(token)
        body = None
        if call.data == INVOKE and isinstance(result, dict):
            try:
                body = await aread_body(result)
            except BaseException as exc:  # cancelled while reading: the call ends with it
                _failed(call, exc)
                raise
        return _done(calls, call, result, body)

    def async_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(calls, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return run_async(wrapped, call, args, kwargs)

    return sync_wrapper, async_wrapper


def _botocore_version() -> str:
    try:
        from botocore import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


class BedrockInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments AWS Bedrock runtime clients (boto3 / botocore; aiobotocore where installed).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``capture_content``
    (bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        core = SpanCore(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            error_info=error_info,
        )
        calls = BedrockCalls(core, f"botocore/{_botocore_version()}")
        sync_wrapper, async_wrapper = _wrappers(calls)
        wraps = WrapSet()
        wraps.wrap(
            [
                Target("botocore.client", "BaseClient", "_make_api_call", sync_wrapper, raw=True),
                Target("aiobotocore.client", "AioBaseClient", "_make_api_call", async_wrapper, raw=True),
            ]
        )
        self._wraps = wraps

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None


__all__ = ["BedrockInstrumentor", "error_info", "resolve"]
