"""What a Bedrock ``modelId`` is priced as: the Pay-i resource and its resource scope.

Bedrock accepts several spellings of one model:

* a base model id, ``anthropic.claude-3-5-haiku-20241022-v1:0`` (in-region, on demand): the resource
  as is, no scope;
* a cross-region (geographic) inference profile, ``us.`` / ``eu.`` / ``apac.`` / ``jp.`` / ``au.`` /
  ``ca.`` / ``in.`` / ``us-gov.`` + base model id: the base model, scope ``datazone.<geo>``;
* a global inference profile, ``global.`` + base model id: the base model, scope ``global`` (priced
  lower than in-region and geographic profiles for the models that offer it);
* an ARN of a foundation model or of a system inference profile
  (``arn:aws:bedrock:<region>:<account>:inference-profile/us.anthropic...``): resolved as above from
  the id after the last ``/``.

Anything else (application inference profiles, provisioned throughput, imported or marketplace
models, SageMaker endpoints) names no public model: the id is kept as the resource, unchanged.
"""

from __future__ import annotations

from functools import lru_cache

SCOPE_GLOBAL = "global"
DATAZONE_PREFIX = "datazone."

# Geographic inference-profile prefixes AWS uses (longest first so "us-gov." wins over "us.").
GEO_PREFIXES = ("us-gov", "apac", "us", "eu", "jp", "au", "ca", "in")

_RESOLVABLE_ARN_KINDS = ("foundation-model/", "inference-profile/")


@lru_cache(maxsize=512)
def resolve(model_id: str) -> tuple[str, str | None]:
    """``(resource, resource scope or None)`` for a Bedrock ``modelId``."""
    model = model_id.strip()
    if model.startswith("arn:"):
        parts = model.split(":", 5)
        resource_part = parts[5] if len(parts) == 6 else ""
        if parts[2:3] != ["bedrock"] or not resource_part.startswith(_RESOLVABLE_ARN_KINDS):
            return model, None
        model = resource_part.split("/", 1)[1]
    head, dot, rest = model.partition(".")
    if not dot or "." not in rest:  # "<geo>.<provider>.<model>" has two dots at least
        return model, None
    if head == SCOPE_GLOBAL:
        return rest, SCOPE_GLOBAL
    if head in GEO_PREFIXES:
        return rest, DATAZONE_PREFIX + head
    return model, None


def is_embedding_model(resource: str) -> bool:
    return "embed" in resource


def family(resource: str) -> str:
    """The model provider part of a base model id: ``anthropic``, ``amazon``, ``meta``, ..."""
    head, dot, _ = resource.partition(".")
    return head if dot else ""


__all__ = ["family", "is_embedding_model", "resolve"]
