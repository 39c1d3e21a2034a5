"""Stream helpers (``chat.completions.stream()``, ``responses.stream()``) that close the HTTP response
directly. Raw responses (``with_raw_response`` / ``with_streaming_response``) are handled by
:class:`payi_otel.instrumentation._stainless.RawResponses`, shared with the other Stainless SDKs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]


def helper_close_hook(wrapped: Callable[..., Any], instance: Any, args: _Args, kwargs: _Kwargs) -> Any:
    """Stream helpers (``chat.completions.stream()``, ``responses.stream()``) close the HTTP response
    directly; end our stream's span first so it is not left to garbage collection."""
    raw_stream = getattr(instance, "_raw_stream", None)
    close = getattr(raw_stream, "payi_close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.debug("could not close instrumented stream", exc_info=True)
    return wrapped(*args, **kwargs)
