"""A small support-desk application that calls OpenAI for several features and users.

Nothing in it knows about exporters or Pay-i endpoints: run it under OpenTelemetry's zero-code
launcher with the Pay-i exporter and every OpenAI call becomes a priced, attributed request record:

    OTEL_TRACES_EXPORTER=otlp,payi opentelemetry-instrument python examples/openai_app.py

`@track` and `track_context` say which use case (feature), user and account each call is for.
With OPENAI_API_KEY set it calls OpenAI; without it, it is answered from real recorded OpenAI
responses (examples/recordings), so it runs on a machine with no provider account or network.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from pathlib import Path

import openai

from payi_otel import get_context, track, track_context

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. Boston, MA"}
            },
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}


def make_clients() -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    """Real OpenAI clients, or clients answered from the recordings when there is no API key."""
    if os.environ.get("OPENAI_API_KEY"):
        return openai.OpenAI(), openai.AsyncOpenAI()

    from payi_otel.testing.replay import Cassette

    # openai 3.x is built on httpx2, older majors on httpx: answer through the one the SDK uses.
    library = "httpx2" if hasattr(openai._base_client, "httpx2") else "httpx"
    http = importlib.import_module(library)
    recordings = sorted((Path(__file__).parent / "recordings").glob("*.yaml"))
    interactions = [i for path in recordings for i in Cassette.load(path).interactions]
    transport = Cassette(interactions, name="examples/recordings").transport(library)
    return (
        openai.OpenAI(api_key="recorded", http_client=http.Client(transport=transport)),
        openai.AsyncOpenAI(api_key="recorded", http_client=http.AsyncClient(transport=transport)),
    )


client, async_client = make_clients()


@track(use_case_name="ticket-triage")
async def triage(ticket_id: str, user: str) -> str:
    """Runs concurrently for several users; each call is its own use-case instance."""
    with track_context(user_id=user, request_properties={"ticket": ticket_id}):
        reply = await async_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say this is a test"}]
        )
        return reply.choices[0].message.content or ""


@track(use_case_name="weather-assistant", account_name="acme", user_id="carol")
def weather_assistant(question: str) -> str:
    """A tool-calling loop: both model calls belong to the same use-case instance."""
    messages = [
        {"role": "system", "content": "You're a helpful assistant."},
        {"role": "user", "content": question},
    ]
    with track_context(use_case_step="plan"):
        first = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
        )
    calls = first.choices[0].message.tool_calls or []
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        city = json.loads(call.function.arguments)["location"]
        weather = "50 degrees and raining" if "Seattle" in city else "70 degrees and sunny"
        messages.append({"role": "tool", "content": weather, "tool_call_id": call.id})
    with track_context(use_case_step="answer"):
        final = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    return final.choices[0].message.content or ""


@track(use_case_name="summarize", request_tags=["streaming"])
def summarize(user: str, model: str) -> str:
    """Streamed answers: usage arrives in the stream and is priced like any other call."""
    with track_context(user_id=user):
        with client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say this is a test"}], stream=True
        ) as stream:
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@track(use_case_name="search-index", user_id="indexer")
def index_document(text: str) -> int:
    vectors = client.embeddings.create(model="text-embedding-3-small", input=text)
    return len(vectors.data[0].embedding)


@track(use_case_name="ticket-triage", use_case_step="draft-reply", user_id="alice")
def draft_reply() -> str:
    print(f"  context for the draft: {get_context()}")
    response = client.responses.create(
        model="gpt-4o-mini", instructions="You are a helpful assistant.", input="Say this is a test"
    )
    return response.output_text


async def main() -> None:
    answers = await asyncio.gather(triage("T-1001", "alice"), triage("T-1002", "bob"))
    print(f"ticket-triage (alice, bob concurrently): {answers}")
    print(f"weather-assistant: {weather_assistant('What is the weather in Seattle and San Francisco today?')!r}")
    print(f"summarize (gpt-4o-mini, streamed): {summarize('alice', 'gpt-4o-mini')!r}")
    print(f"summarize (gpt-4, streamed): {summarize('dave', 'gpt-4')!r}")
    print(f"search-index: {index_document('This is a test for embeddings')} dimensions")
    print(f"ticket-triage draft (Responses API): {draft_reply()!r}")


if __name__ == "__main__":
    asyncio.run(main())
