"""payi-otel: OpenTelemetry instrumentation that turns GenAI provider calls into Pay-i cost records.

Public API::

    from payi_otel import instrument, track, track_context, get_context
"""

from payi_otel.configure import instrument
from payi_otel.context import get_context, track, track_context
from payi_otel.enforcement import LimitBlockedError, LimitCheckError, LimitError

payi_instrument = instrument  # drop-in name for users coming from Pay-i's SDK

__all__ = [
    "LimitBlockedError",
    "LimitCheckError",
    "LimitError",
    "get_context",
    "instrument",
    "payi_instrument",
    "track",
    "track_context",
]
