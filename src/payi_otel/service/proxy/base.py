"""What the proxy needs to know of a provider API: routes, the request's worst case, the response's usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from payi_otel.units import Units, Usage, to_units

# When a request names no output bound and the model's context window is unknown, the worst case
# assumes this many output tokens.
DEFAULT_OUTPUT_BOUND = 32_768


@dataclass(slots=True)
class ProxiedCall:
    """One request to a provider, as the proxy understands it."""

    category: str
    operation: str  # chat, responses, embeddings, images, messages
    model: str | None
    stream: bool
    input_bound: int  # an upper bound of the input tokens (see estimate_input_tokens)
    output_bound: int | None  # the output tokens the request allows (None: not bounded by the request)


@dataclass(slots=True)
class CallResult:
    """What a response (or a stream, event by event) told of the call."""

    model: str | None = None
    response_id: str | None = None
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def units(self) -> Units:
        return to_units(self.usage) if self.usage is not None else {}


class StreamReader(Protocol):
    def feed(self, event: str | None, data: Any) -> bool:
        """Read one SSE event (its ``event:`` name and its JSON data); True when it may be the
        stream's last data event (it then carries ``xproxy_result`` unless another follows)."""

    @property
    def result(self) -> CallResult: ...


class Provider(Protocol):
    name: str  # the route segment after /api/v1/proxy/
    category: str

    def call(self, path: str, body: Any, size: int) -> ProxiedCall | None:
        """The call a request to ``path`` (below the provider's base) with the JSON ``body`` of
        ``size`` bytes makes; None: the path is not an API the proxy serves."""

    def result(self, call: ProxiedCall, body: Any) -> CallResult:
        """What a non-streamed success body says (best effort: never raises on odd bodies)."""

    def stream_reader(self, call: ProxiedCall) -> StreamReader: ...

    def is_stream_end(self, data: bytes) -> bool:
        """True for a terminator event's data (OpenAI's ``[DONE]``): the last data event comes before it."""


def estimate_input_tokens(body_size: int) -> int:
    """An upper bound of the input tokens of a text request: its body's size in bytes.

    Every token of a byte-level BPE tokenizer covers at least one byte, and the JSON around each
    message (``{"role":"user","content":""}``) is longer than the few tokens the chat format adds.
    Images sent by URL and audio are not bounded by this (their tokens do not depend on the body).
    """
    return body_size


def positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def model_of(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def wants_stream(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True
