"""Instrumenting imports no provider SDK: each one is wrapped when the application imports it (at once if it
already has). An SDK that is installed but never imported costs the application no import time and no memory.

Each case runs in a fresh interpreter (this one has every SDK imported already), with the real SDKs and only
their HTTP transports replaced; events go to the exporter's offline file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from payi_otel.instrumentation._wrapping import WrapSet

TESTS = Path(__file__).parent
OPENAI_CASSETTES = TESTS / "cassettes/open-telemetry__opentelemetry-python-contrib/openai"
SDKS = ("openai", "anthropic", "botocore", "aiobotocore", "google.genai")

PRELUDE = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
SDKS = {SDKS!r}

def imported():
    return [name for name in SDKS if name in sys.modules]

def ours(owner, method):
    '''True when ``owner.method`` is wrapped by payi-otel (our wrapper functions carry the marker).'''
    wrapper = getattr(vars(owner)[method], "_self_wrapper", None)
    return getattr(wrapper, "_payi_otel_wrapset", None) is not None
"""

LAZY_APP = """
import payi_otel
payi_otel.instrument(use_case_name="lazy")
print("AFTER_INSTRUMENT", json.dumps(imported()), flush=True)
# nor do the instrumentation's own modules for those SDKs
print("OWN_MODULES", json.dumps(sorted(m for m in sys.modules if m.endswith(("._targets", "._calls")))), flush=True)

import httpx2, openai
from openai.resources.chat.completions import Completions
from payi_otel.testing.replay import Cassette

from _anthropic_helpers import client_for as anthropic_client, load as anthropic_cassette
import anthropic.resources.messages as anthropic_messages
import botocore.client
import google.genai.models as genai_models

LAZY_OPENAI_MODULES = ("openai.resources.audio", "openai.resources.images", "openai.resources.responses",
                       "openai.lib.streaming.responses")
CHAT = {chat!r}
transport = Cassette.load(CHAT).transport("httpx2")
client = openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=transport), max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Say this is a test"}}])
cassette, interaction = anthropic_cassette("test_anthropic_message_create_legacy")
anthropic_client(interaction, cassette).messages.create(**interaction.request_body)

wrapped = {{
    "openai": ours(Completions, "create"),
    "anthropic": ours(anthropic_messages.Messages, "create"),
    "botocore": ours(botocore.client.BaseClient, "_make_api_call"),
    "google.genai": ours(genai_models.Models, "_generate_content"),
    "aiobotocore (not imported yet)": "aiobotocore" in sys.modules,
    # modules openai imports only when a client first uses them stay unimported
    "openai's lazy modules imported": sorted(m for m in LAZY_OPENAI_MODULES if m in sys.modules),
}}
import aiobotocore.client
wrapped["aiobotocore"] = ours(aiobotocore.client.AioBaseClient, "_make_api_call")
print("WRAPPED", json.dumps(wrapped), flush=True)
"""

UNINSTRUMENTED_APP = """
from payi_otel.instrumentation.openai import OpenAIInstrumentor
instrumentor = OpenAIInstrumentor()
instrumentor.instrument()
instrumentor.uninstrument()
import wrapt
from openai.resources.chat.completions import Completions
print("WRAPPED", json.dumps(isinstance(vars(Completions)["create"], wrapt.FunctionWrapper)))
"""


def run(code: str, tmp_path: Path) -> tuple[str, list[dict[str, object]]]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(code))
    offline = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    env.update(PAYI_OFFLINE_FILE=str(offline), OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in offline.read_text().splitlines()] if offline.exists() else []
    return out.stdout, events


def line(stdout: str, tag: str) -> object:
    return json.loads(stdout.split(f"{tag} ", 1)[1].splitlines()[0])


def test_instrument_imports_no_sdk_and_each_is_wrapped_when_the_app_imports_it(tmp_path):
    chat = OPENAI_CASSETTES / "test_chat_completion_extra_params.yaml"
    stdout, events = run(LAZY_APP.format(chat=str(chat)), tmp_path)

    assert line(stdout, "AFTER_INSTRUMENT") == []
    assert line(stdout, "OWN_MODULES") == []
    assert line(stdout, "WRAPPED") == {
        "openai": True,
        "anthropic": True,
        "botocore": True,
        "google.genai": True,
        "aiobotocore (not imported yet)": False,  # its row waited for its own import, not botocore's
        "openai's lazy modules imported": [],
        "aiobotocore": True,
    }
    assert sorted((e["category"], e["use_case_name"]) for e in events) == [
        ("system.anthropic", "lazy"),
        ("system.openai", "lazy"),
    ]
    assert all(e["units"]["text"]["input"] > 0 for e in events)


def test_uninstrumenting_before_the_sdk_is_imported_wraps_nothing(tmp_path):
    stdout, _ = run(UNINSTRUMENTED_APP, tmp_path)
    assert line(stdout, "WRAPPED") is False


def test_a_failure_while_wrapping_is_logged_and_never_breaks_the_applications_import(tmp_path, monkeypatch, caplog):
    (tmp_path / "some_sdk").mkdir()
    (tmp_path / "some_sdk" / "__init__.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wraps = WrapSet()

    def fails() -> None:
        raise RuntimeError("cannot read this SDK")

    wraps.on_import("some_sdk", fails)
    import some_sdk  # type: ignore[import-not-found]

    assert some_sdk.VALUE == 42
    assert "payi-otel could not instrument some_sdk; its calls are not traced" in caplog.text
    assert "cannot read this SDK" in caplog.text
    monkeypatch.delitem(sys.modules, "some_sdk")
