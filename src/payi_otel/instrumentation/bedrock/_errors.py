"""botocore errors as the span core records them: HTTP status and AWS request id.

``ClientError`` carries both in ``response["ResponseMetadata"]``. Errors inside an event stream
(``EventStreamError``) arrive with an error code only; they get the status AWS documents for that code.
Throttling is a 429 wherever it is reported.
"""

from __future__ import annotations

from payi_otel.core import Call

_THROTTLING = frozenset({"throttlingexception", "toomanyrequestsexception", "throttling"})
_STREAM_ERROR_STATUS = {
    "internalserverexception": 500,
    "modelstreamerrorexception": 424,
    "validationexception": 400,
    "serviceunavailableexception": 503,
    "modeltimeoutexception": 408,
}


def error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and AWS request id of a botocore ``ClientError`` (or ``EventStreamError``)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode")
    request_id = meta.get("RequestId")
    code = str((response.get("Error") or {}).get("Code") or "").lower()
    if code in _THROTTLING:
        status = 429
    elif not isinstance(status, int):
        status = _STREAM_ERROR_STATUS.get(code)
    return status, request_id if isinstance(request_id, str) and request_id else None


def fail(call: Call, exc: BaseException) -> None:
    """End ``call`` as failed. The span core reads the status and request id with :func:`error_info`;
    for a stream the error's status also replaces the 200 it started with (throttled part way: 429)."""
    status, _ = error_info(exc)
    if status is not None:
        call.record.status_code = status
    call.fail(exc)


__all__ = ["error_info", "fail"]
