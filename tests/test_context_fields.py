"""The business-context fields are declared once (protocol.CONTEXT_FIELDS); the spellings that must stay
static for type checkers and API schemas are checked against that declaration here."""

from __future__ import annotations

import dataclasses
import typing

from payi_otel import context, context_validation
from payi_otel import protocol as P
from payi_otel.service import models
from payi_otel.service.attribution import Attribution


def test_keyword_types_name_every_declared_field_in_order():
    assert tuple(typing.get_type_hints(context_validation.ContextLayer)) == P.CONTEXT_FIELD_NAMES
    public = tuple(f.name for f in dataclasses.fields(context.BusinessContext) if not f.name.startswith("_"))
    assert public == P.CONTEXT_FIELD_NAMES


def test_ingest_models_carry_every_attribution_field():
    attribution = {f.name for f in dataclasses.fields(Attribution)}
    bulk = set(models.BulkIngestRequest.model_fields)
    for f in P.CONTEXT_FIELDS:
        if f.role == P.ATTRIBUTION:
            assert f.name in attribution, f.name
            assert f.bulk_field in bulk, f.bulk_field
        elif f.role == P.PROPERTIES:
            assert f.event_field in models.IngestRequest.model_fields, f.event_field


def test_every_field_reaches_span_attributes_and_headers():
    values = {
        P.STR: "x-1",
        P.INT: 3,
        P.LIST: ["a", "b"],
        P.PROPS: {"k": "v"},
    }
    layer = {f.name: values[f.kind] for f in P.CONTEXT_FIELDS}
    layer["use_case_name"] = "uc"
    layer["resource_scope"] = "global"
    attrs = context.merge(None, **layer).span_attributes
    for f in P.CONTEXT_FIELDS:
        if f.kind == P.PROPS:
            assert attrs[f.attribute + "k"] == "v"
        else:
            assert f.attribute in attrs, f.attribute
    headers = {f.header: ",".join(v) if isinstance(v := layer[f.name], list) else str(v) for f in P.CONTEXT_FIELDS}
    headers = {h: v for h, v in headers.items() if not h.endswith("Properties")}
    parsed, remaining = context_validation.layer_from_headers(headers)
    assert remaining == {}
    assert set(parsed) == {f.name for f in P.CONTEXT_FIELDS if f.kind != P.PROPS}
