"""What the Stainless-generated provider SDKs (openai, anthropic) share."""

from __future__ import annotations


def error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and provider request id of an ``APIStatusError`` (``status_code``, ``request_id``)."""
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    return (
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        request_id if isinstance(request_id, str) and request_id else None,
    )
