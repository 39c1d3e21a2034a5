"""Span attribute names: the contract between the span core and the exporter.

The span core writes these attributes on every GenAI provider-call span; the exporter
(``payi_otel.exporters``) reads only these, so no provider knowledge is needed after a span
ends, and spans that arrive over OTLP from another process convert the same way.

Two namespaces:

* ``gen_ai.*``, ``server.*``, ``error.type``: OpenTelemetry GenAI semantic conventions, for what
  they cover. ``gen_ai.usage.input_tokens`` is the *total* input, cache reads and writes included
  (as the conventions require); ``gen_ai.usage.output_tokens`` includes reasoning tokens.
* ``payi.*``: this project's own namespace: the business context, Pay-i's view of the call
  (category, resource, units) and facts the conventions do not cover.

Older spellings the exporter also reads are listed in ``LEGACY``.

The span core writes a ``payi.*`` attribute of the call's Pay-i view only when it says more than the
semantic-convention attributes and the span's own times already do (each attribute costs time on the
caller's thread): the exporter derives the category from ``gen_ai.provider.name``, the resource from
``gen_ai.request.model``, units from the ``gen_ai.usage.*`` counts, the response id from
``gen_ai.response.id``, the latency from the span's duration, and status 200 for a call that did not
fail. The exact rules are in :mod:`payi_otel.core`. Spans from other sources (OTLP, other
instrumentations) may carry any of these attributes; the exporter reads them when present.
"""

from __future__ import annotations

# --- GenAI semantic conventions -------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"  # chat, text_completion, embeddings, ...
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"  # openai, azure.ai.openai, anthropic, aws.bedrock, ...
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"  # string[]
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"  # bool
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"  # total, cache included
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"  # total, reasoning included
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_INPUT_AUDIO_TOKENS = "gen_ai.usage.audio.input_tokens"  # util-genai 1.x per-modality counts,
GEN_AI_USAGE_OUTPUT_AUDIO_TOKENS = "gen_ai.usage.audio.output_tokens"  # each part of the totals above
GEN_AI_USAGE_INPUT_IMAGE_TOKENS = "gen_ai.usage.image.input_tokens"
GEN_AI_USAGE_OUTPUT_IMAGE_TOKENS = "gen_ai.usage.image.output_tokens"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # seconds (double)
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # JSON string; only with content capture on
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # JSON string; only with content capture on
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"  # JSON string; only with content capture on
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"  # fully qualified exception class name
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"

# --- Other instrumentations' names for "this span is one provider call" ---------------------
LLM_REQUEST_TYPE = "llm.request.type"  # OpenLLMetry before gen_ai.operation.name: chat, completion, embedding
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"  # OpenInference: LLM, EMBEDDING, CHAIN, TOOL, ...

# --- Resource attributes kept on every event as request properties (same names) -------------
SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
# resource attribute -> property name (``deployment.environment`` is the spelling before semconv 1.27)
RESOURCE_PROPERTIES = {
    SERVICE_NAME: SERVICE_NAME,
    SERVICE_NAMESPACE: SERVICE_NAMESPACE,
    DEPLOYMENT_ENVIRONMENT_NAME: DEPLOYMENT_ENVIRONMENT_NAME,
    "deployment.environment": DEPLOYMENT_ENVIRONMENT_NAME,
}

# --- Pay-i view of the call (written when not derivable, see the module docstring) -------------
PAYI_CATEGORY = "payi.category"  # e.g. system.openai, system.azureopenai
PAYI_RESOURCE = "payi.resource"  # e.g. gpt-4o-mini (Azure: the mapped model)
# Units, flattened: payi.units.<unit_type>.input / payi.units.<unit_type>.output (ints),
# e.g. payi.units.text.input=70, payi.units.text_cache_read.input=30, payi.units.reasoning.output=20.
PAYI_UNITS_PREFIX = "payi.units."
PAYI_USAGE_COMPLETE = "payi.usage.complete"  # bool: False when the provider reported no (or partial) usage
PAYI_USAGE_INCOMPLETE_REASON = "payi.usage.incomplete_reason"  # e.g. "stream ended early", "no usage in stream"
PAYI_HTTP_STATUS_CODE = "payi.http_status_code"  # provider status; absent when the call failed without one
PAYI_PROVIDER_RESPONSE_ID = "payi.provider_response_id"
PAYI_PROVIDER_URI = "payi.provider_uri"  # the base URL the client called
PAYI_LATENCY_MS = "payi.end_to_end_latency_ms"  # int; call start to response (streams: to stream end)
PAYI_TIME_TO_FIRST_TOKEN_MS = "payi.time_to_first_token_ms"  # int; streams only
PAYI_FUNCTION_CALLS = "payi.function_calls"  # JSON string: [{"name": ..., "arguments": "..."}]
PAYI_FAILURE_DESCRIPTION = "payi.failure.description"  # failures without an HTTP status
PAYI_INSTRUMENTED_MODULE = "payi.instrumented_module"  # e.g. openai/3.54.0
PAYI_RESERVATION_ID = "payi.reservation_id"  # the call's reservation against its block limits (enforcement)
PAYI_PROXIED = "payi.proxied"  # the call went through a Pay-i proxy, which stores it: no ingest event
PAYI_STREAM_OUTCOME = "payi.stream.outcome"  # completed | closed_early | error | abandoned

# --- Business context (from track / track_context / global defaults) -----------------------
PAYI_USE_CASE_NAME = "payi.use_case.name"
PAYI_USE_CASE_ID = "payi.use_case.id"
PAYI_USE_CASE_VERSION = "payi.use_case.version"  # int
PAYI_USE_CASE_STEP = "payi.use_case.step"
PAYI_USER_ID = "payi.user_id"
PAYI_ACCOUNT_NAME = "payi.account_name"
PAYI_REQUEST_TAGS = "payi.request_tags"  # string[]
PAYI_LIMIT_IDS = "payi.limit_ids"  # string[]
PAYI_RESOURCE_SCOPE = "payi.resource_scope"
PAYI_PRICE_AS_CATEGORY = "payi.price_as.category"
PAYI_PRICE_AS_RESOURCE = "payi.price_as.resource"
# Properties, flattened: payi.request_properties.<key> / payi.use_case_properties.<key> (strings).
PAYI_REQUEST_PROPERTIES_PREFIX = "payi.request_properties."
PAYI_USE_CASE_PROPERTIES_PREFIX = "payi.use_case_properties."

# --- Older and other spellings the exporter still reads -----------------------------------
# Semconv churn (gen_ai.system, *_tokens), OpenLLMetry (gen_ai.usage.prompt_tokens, llm.usage.*) and
# OpenInference (llm.provider, llm.model_name, llm.token_count.*).
LEGACY = {
    GEN_AI_PROVIDER_NAME: ("gen_ai.system", "llm.provider", "llm.system"),
    GEN_AI_REQUEST_MODEL: ("llm.request.model",),
    GEN_AI_RESPONSE_MODEL: ("llm.response.model", "llm.model_name"),
    GEN_AI_USAGE_INPUT_TOKENS: ("gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens", "llm.token_count.prompt"),
    GEN_AI_USAGE_OUTPUT_TOKENS: (
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: (
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: (
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: (
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
    GEN_AI_USAGE_INPUT_AUDIO_TOKENS: ("llm.token_count.prompt_details.audio",),
    GEN_AI_USAGE_OUTPUT_AUDIO_TOKENS: ("llm.token_count.completion_details.audio",),
}

# The anthropic SDK's own spans (scope com.anthropic.sdk.python): the split of cache writes by lifetime.
ANTHROPIC_CACHE_WRITE_5M_TOKENS = "anthropic.usage.cache_creation.ephemeral_5m_input_tokens"
ANTHROPIC_CACHE_WRITE_1H_TOKENS = "anthropic.usage.cache_creation.ephemeral_1h_input_tokens"
# Tool-call parts of gen_ai.output.messages with this id prefix ran on Anthropic's servers (web search, ...).
ANTHROPIC_SERVER_TOOL_ID_PREFIX = "srvtoolu_"

# Provider names (gen_ai.provider.name / gen_ai.system / llm.provider values, compared lower-cased)
# -> Pay-i category.
PROVIDER_CATEGORIES = {
    "openai": "system.openai",
    "azure.ai.openai": "system.azureopenai",
    "az.ai.openai": "system.azureopenai",
    "azure_openai": "system.azureopenai",
    "anthropic": "system.anthropic",
    "aws.bedrock": "system.aws.bedrock",
    "aws_bedrock": "system.aws.bedrock",
    "gcp.vertex_ai": "system.google.vertex",
    "vertex_ai": "system.google.vertex",
    "gcp.gemini": "system.google.vertex",
    "gemini": "system.google.vertex",
    "gcp.gen_ai": "system.google.vertex",
    "azure": "system.azureopenai",  # OpenInference's llm.provider
    "aws": "system.aws.bedrock",
    "bedrock": "system.aws.bedrock",
    "google": "system.google.vertex",
}

# server.address suffixes of Azure OpenAI endpoints: an "openai" span that called one is an Azure call
# (the official openai-v2 instrumentation reports Azure clients as provider "openai").
AZURE_OPENAI_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")

# Values of llm.request.type (OpenLLMetry) and openinference.span.kind that mark a provider call on a
# span without gen_ai.operation.name.
LEGACY_CALL_TYPES = frozenset({"chat", "completion", "embedding", "llm"})

# Operations that are provider calls (an ingest event each); others (invoke_agent, execute_tool,
# create_agent, ...) are not.
PROVIDER_CALL_OPERATIONS = frozenset(
    {
        "chat",
        "text_completion",
        "embeddings",
        "generate_content",
        "image_generation",
        "image_edit",
        "audio_transcription",
        "audio_translation",
        "audio_speech",
    }
)
