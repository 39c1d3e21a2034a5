"""Business context: merge rules, validation, global defaults, span attributes, xProxy headers."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from payi_otel import attributes as A
from payi_otel import get_context, track, track_context
from payi_otel.context import (
    PROCESS_USE_CASE_ID,
    BusinessContext,
    clear_global_defaults,
    current_business_context,
    layer_from_headers,
    merge,
    set_global_defaults,
)


@pytest.fixture(autouse=True)
def _no_global_defaults():
    clear_global_defaults()
    yield
    clear_global_defaults()


def chain(*layers: dict) -> BusinessContext | None:
    ctx = None
    for layer in layers:
        ctx = merge(ctx, **layer)
    return ctx


def is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4


# --- merge rules, table-driven ------------------------------------------------------------
# (description, parent layers, child layer, expected values of the merged dict)
SCALAR_FIELDS = ["user_id", "account_name", "price_as_category", "price_as_resource"]

MERGE_CASES = [
    *[(f"{f}: None inherits", [{f: "p"}], {}, {f: "p"}) for f in SCALAR_FIELDS],
    *[(f"{f}: empty clears", [{f: "p"}], {f: ""}, {f: None}) for f in SCALAR_FIELDS],
    *[(f"{f}: value overrides", [{f: "p"}], {f: "c"}, {f: "c"}) for f in SCALAR_FIELDS],
    ("resource_scope inherits", [{"resource_scope": "global"}], {}, {"resource_scope": "global"}),
    (
        "resource_scope overrides",
        [{"resource_scope": "global"}],
        {"resource_scope": "datazone.eu"},
        {"resource_scope": "datazone.eu"},
    ),
    ("resource_scope clears", [{"resource_scope": "region"}], {"resource_scope": ""}, {"resource_scope": None}),
    ("limit_ids inherit", [{"limit_ids": ["a"]}], {}, {"limit_ids": ["a"]}),
    (
        "limit_ids union, parent first, deduped",
        [{"limit_ids": ["b", "a"]}],
        {"limit_ids": ["a", "c", "c"]},
        {"limit_ids": ["b", "a", "c"]},
    ),
    ("limit_ids [] clears", [{"limit_ids": ["a"]}], {"limit_ids": []}, {"limit_ids": None}),
    (
        "limit_ids after clear start fresh",
        [{"limit_ids": ["a"]}, {"limit_ids": []}],
        {"limit_ids": ["z"]},
        {"limit_ids": ["z"]},
    ),
    ("request_tags union", [{"request_tags": ["t1"]}], {"request_tags": ("t2", "t1")}, {"request_tags": ["t1", "t2"]}),
    ("request_tags set input sorted", [], {"request_tags": {"b", "a"}}, {"request_tags": ["a", "b"]}),
    ("request_tags () clears", [{"request_tags": ["t1"]}], {"request_tags": ()}, {"request_tags": None}),
    ("request_properties inherit", [{"request_properties": {"a": "1"}}], {}, {"request_properties": {"a": "1"}}),
    (
        "request_properties merge, child wins",
        [{"request_properties": {"a": "1", "b": "2"}}],
        {"request_properties": {"b": "3", "c": "4"}},
        {"request_properties": {"a": "1", "b": "3", "c": "4"}},
    ),
    (
        "request_properties {} clears",
        [{"request_properties": {"a": "1"}}],
        {"request_properties": {}},
        {"request_properties": None},
    ),
    (
        "use_case_properties merge, child wins",
        [{"use_case_name": "u", "use_case_properties": {"a": "1"}}],
        {"use_case_properties": {"a": "2"}},
        {"use_case_properties": {"a": "2"}},
    ),
    (
        "use_case_properties {} clears",
        [{"use_case_name": "u", "use_case_properties": {"a": "1"}}],
        {"use_case_properties": {}},
        {"use_case_properties": None, "use_case_name": "u"},
    ),
    (
        "name None inherits name, id, version, step, properties",
        [
            {
                "use_case_name": "u",
                "use_case_id": "id1",
                "use_case_version": 3,
                "use_case_step": "s",
                "use_case_properties": {"k": "v"},
            }
        ],
        {},
        {
            "use_case_name": "u",
            "use_case_id": "id1",
            "use_case_version": 3,
            "use_case_step": "s",
            "use_case_properties": {"k": "v"},
        },
    ),
    (
        'name "" clears name, id, version, step, properties',
        [
            {
                "use_case_name": "u",
                "use_case_id": "id1",
                "use_case_version": 3,
                "use_case_step": "s",
                "use_case_properties": {"k": "v"},
            }
        ],
        {"use_case_name": ""},
        {
            "use_case_name": None,
            "use_case_id": None,
            "use_case_version": None,
            "use_case_step": None,
            "use_case_properties": None,
        },
    ),
    (
        "same name keeps the parent's id",
        [{"use_case_name": "u", "use_case_id": "id1"}],
        {"use_case_name": "u"},
        {"use_case_name": "u", "use_case_id": "id1"},
    ),
    (
        "same name with a given id takes it",
        [{"use_case_name": "u", "use_case_id": "id1"}],
        {"use_case_name": "u", "use_case_id": "id2"},
        {"use_case_id": "id2"},
    ),
    (
        "different name with a given id takes it",
        [{"use_case_name": "u", "use_case_id": "id1"}],
        {"use_case_name": "v", "use_case_id": "id2"},
        {"use_case_name": "v", "use_case_id": "id2"},
    ),
    (
        "version and step inherit under a new name unless given",
        [{"use_case_name": "u", "use_case_version": 2, "use_case_step": "s1"}],
        {"use_case_name": "v", "use_case_step": "s2"},
        {"use_case_name": "v", "use_case_version": 2, "use_case_step": "s2"},
    ),
    (
        "step empty clears",
        [{"use_case_name": "u", "use_case_step": "s1"}],
        {"use_case_step": ""},
        {"use_case_step": None},
    ),
    (
        "version 0 is a value",
        [{"use_case_name": "u", "use_case_version": 4}],
        {"use_case_version": 0},
        {"use_case_version": 0},
    ),
    ("id without name but cleared with empty is fine", [], {"use_case_id": ""}, {"use_case_id": None}),
]


@pytest.mark.parametrize(
    ("parents", "child", "expected"), [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES]
)
def test_merge_rules(parents, child, expected):
    merged = merge(chain(*parents), **child).as_dict()
    for key, value in expected.items():
        assert merged.get(key) == value, key


def test_different_name_starts_a_new_instance_with_fresh_uuid4():
    parent = chain({"use_case_name": "u", "use_case_id": "id1"})
    first = merge(parent, use_case_name="v")
    second = merge(parent, use_case_name="v")
    assert first.use_case_name == "v"
    assert is_uuid4(first.use_case_id) and is_uuid4(second.use_case_id)
    assert first.use_case_id != second.use_case_id != "id1"


def test_name_from_nothing_gets_a_fresh_id():
    ctx = merge(None, use_case_name="u")
    assert is_uuid4(ctx.use_case_id)


@pytest.mark.parametrize(
    "layer",
    [{"use_case_id": "x"}, {"use_case_version": 1}, {"use_case_step": "s"}, {"use_case_properties": {"a": "b"}}],
    ids=lambda layer: next(iter(layer)),
)
def test_use_case_fields_without_a_name_in_effect_are_an_error(layer):
    key = next(iter(layer))
    with pytest.raises(ValueError, match=f"^{key}: requires a use_case_name in effect"):
        merge(None, **layer)
    with pytest.raises(ValueError, match=f"^{key}: requires a use_case_name"):
        merge(chain({"use_case_name": "u"}), use_case_name="", **layer)
    with pytest.raises(ValueError, match=key), track_context(**layer):
        pass


def test_merge_is_pure():
    parent = chain({"use_case_name": "u", "limit_ids": ["a"], "request_properties": {"k": "v"}})
    before = parent.as_dict()
    merge(parent, limit_ids=["b"], request_properties={"k": "w"}, use_case_name="other")
    assert parent.as_dict() == before


def test_business_context_is_immutable():
    ctx = merge(None, user_id="u", request_properties={"a": "1"})
    with pytest.raises(AttributeError):
        ctx.user_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctx.request_properties["a"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.span_attributes["x"] = 1  # type: ignore[index]


# --- validation -----------------------------------------------------------------------------
VALIDATION_CASES = [
    ("use_case_name", "has space", ValueError, "1-64 characters"),
    ("use_case_name", "x" * 65, ValueError, "1-64 characters"),
    ("use_case_name", "é", ValueError, "letters, digits"),
    ("use_case_name", 5, TypeError, "must be a string"),
    ("use_case_id", "a b", ValueError, "must not contain spaces"),
    ("user_id", "jane doe", ValueError, "must not contain spaces"),
    ("user_id", 42, TypeError, "must be a string"),
    ("account_name", ["a"], TypeError, "must be a string"),
    ("use_case_version", True, TypeError, "must be an int"),
    ("use_case_version", "3", TypeError, "must be an int"),
    ("use_case_version", -1, ValueError, "non-negative"),
    ("use_case_version", 2**63, ValueError, "at most 9223372036854775807"),
    ("account_name", "acme\n999.00", ValueError, "no control characters"),
    ("user_id", "u" * 1025, ValueError, "at most 1024 characters"),
    ("use_case_step", "\x1b[2J", ValueError, "no control characters"),
    ("request_tags", [f"t{i}" for i in range(101)], ValueError, "at most 100 entries"),
    ("limit_ids", ["l" * 1025], ValueError, "at most 1024 characters"),
    ("request_properties", {"k": "v" * 65537}, ValueError, "at most 65536 characters"),
    ("request_properties", {"a\rb": "v"}, ValueError, "no control characters"),
    ("use_case_properties", {f"k{i}": "v" for i in range(257)}, ValueError, "at most 256 keys"),
    ("request_tags", "tag", TypeError, "list, tuple or set of strings"),
    ("request_tags", ["ok", "not ok"], ValueError, "letters, digits, '_' or '-'"),
    ("request_tags", ["a.b"], ValueError, "letters, digits, '_' or '-'"),
    ("request_tags", [1], TypeError, "every entry must be a string"),
    ("limit_ids", "l1", TypeError, "list, tuple or set of strings"),
    ("limit_ids", [""], ValueError, "non-empty string"),
    ("limit_ids", ["a,b"], ValueError, "without commas"),
    ("limit_ids", [" a"], ValueError, "surrounding spaces"),
    ("request_properties", [("a", "b")], TypeError, "must be a dict"),
    ("request_properties", {"a": 1}, TypeError, "value of 'a' must be a string or None"),
    ("request_properties", {1: "a"}, TypeError, "keys must be non-empty strings"),
    ("use_case_properties", {"": "a"}, TypeError, "keys must be non-empty strings"),
    ("resource_scope", "planet", ValueError, "'global', 'datazone', 'region'"),
    ("price_as_category", 1.5, TypeError, "must be a string"),
]


@pytest.mark.parametrize(
    ("field", "value", "error", "rule"), VALIDATION_CASES, ids=[f"{c[0]}={c[1]!r}"[:40] for c in VALIDATION_CASES]
)
def test_validation_names_parameter_and_rule(field, value, error, rule):
    layer = {field: value}
    if field.startswith("use_case_") and field != "use_case_name":
        layer["use_case_name"] = "u"
    for make in (
        lambda: track_context(**layer),
        lambda: track(**layer),
        lambda: merge(None, **layer),
        lambda: set_global_defaults(**layer),
    ):
        with pytest.raises(error) as info:
            make()
        message = str(info.value)
        assert message.startswith(f"{field}:"), message
        assert rule in message, message


def test_unknown_keyword_is_rejected_by_name():
    with pytest.raises(TypeError, match=r"^use_case: unknown business-context keyword"):
        track_context(use_case="x")


def test_property_values_may_be_none_and_are_left_out_of_span_attributes():
    ctx = merge(None, request_properties={"keep": "1", "gone": None})
    assert ctx.as_dict()["request_properties"] == {"keep": "1", "gone": None}
    assert ctx.span_attributes == {A.PAYI_REQUEST_PROPERTIES_PREFIX + "keep": "1"}
    child = merge(ctx, request_properties={"keep": None})
    assert A.PAYI_REQUEST_PROPERTIES_PREFIX + "keep" not in child.span_attributes


# --- span attributes ------------------------------------------------------------------------
def test_span_attributes_use_the_contract_names_and_are_cached():
    ctx = chain(
        {
            "use_case_name": "uc",
            "use_case_id": "id-1",
            "use_case_version": 2,
            "use_case_step": "draft",
            "user_id": "jane",
            "account_name": "acme",
            "request_tags": ["t1"],
            "limit_ids": ["l1", "l2"],
            "resource_scope": "global",
            "price_as_category": "system.openai",
            "price_as_resource": "gpt-4o",
            "request_properties": {"rp": "1"},
            "use_case_properties": {"up": "2"},
        }
    )
    assert dict(ctx.span_attributes) == {
        A.PAYI_USE_CASE_NAME: "uc",
        A.PAYI_USE_CASE_ID: "id-1",
        A.PAYI_USE_CASE_VERSION: 2,
        A.PAYI_USE_CASE_STEP: "draft",
        A.PAYI_USER_ID: "jane",
        A.PAYI_ACCOUNT_NAME: "acme",
        A.PAYI_REQUEST_TAGS: ("t1",),
        A.PAYI_LIMIT_IDS: ("l1", "l2"),
        A.PAYI_RESOURCE_SCOPE: "global",
        A.PAYI_PRICE_AS_CATEGORY: "system.openai",
        A.PAYI_PRICE_AS_RESOURCE: "gpt-4o",
        A.PAYI_REQUEST_PROPERTIES_PREFIX + "rp": "1",
        A.PAYI_USE_CASE_PROPERTIES_PREFIX + "up": "2",
    }
    assert ctx.span_attributes is ctx.span_attributes


# --- active context and global defaults -----------------------------------------------------
def test_no_context_outside_everything():
    assert current_business_context() is None
    assert get_context() == {}


def test_global_defaults_named_after_calling_module():
    set_global_defaults(limit_ids=["org"])
    assert get_context() == {"use_case_name": "test_context", "use_case_id": PROCESS_USE_CASE_ID, "limit_ids": ["org"]}


def test_global_defaults_are_the_outermost_layer():
    set_global_defaults(use_case_name="app", limit_ids=["org"], user_id="svc")
    app_id = get_context()["use_case_id"]
    assert is_uuid4(app_id)
    with track_context(user_id="jane") as ctx:
        assert ctx.use_case_name == "app" and ctx.use_case_id == app_id and ctx.user_id == "jane"
        with track_context(use_case_name="", user_id=""):
            assert get_context() == {"limit_ids": ["org"]}


def test_changing_globals_after_entering_is_reflected_in_reads():
    set_global_defaults(use_case_name="app", limit_ids=["org"])
    with track_context(user_id="jane", limit_ids=["daily"]):
        assert get_context()["limit_ids"] == ["org", "daily"]
        set_global_defaults(use_case_name="app", limit_ids=["other"], account_name="acme")
        ctx = get_context()
        assert ctx["limit_ids"] == ["other", "daily"] and ctx["account_name"] == "acme" and ctx["user_id"] == "jane"
        clear_global_defaults()
        assert get_context() == {"user_id": "jane", "limit_ids": ["daily"]}


def test_new_instance_id_is_stable_when_globals_change():
    set_global_defaults(use_case_name="app")
    with track_context(use_case_name="inner") as ctx:
        inner_id = ctx.use_case_id
        set_global_defaults(use_case_name="app", user_id="x")
        assert current_business_context().use_case_id == inner_id


def test_pay_i_documented_example():
    # payi-platform.md 3.3: global app + org; @track summarize + daily; inner track_context.
    set_global_defaults(use_case_name="app", limit_ids=["org"])

    @track(use_case_name="summarize", limit_ids=["daily"])
    def summarize():
        outer = current_business_context()
        with track_context(user_id="jane", use_case_step="draft"):
            inner = current_business_context()
            per_call = merge(inner, **layer_from_headers({"xProxy-User-ID": "bob"})[0])
            return outer, inner, per_call

    outer, inner, per_call = summarize()
    assert outer.use_case_name == "summarize" and outer.limit_ids == ("org", "daily")
    assert inner.use_case_id == outer.use_case_id and inner.use_case_step == "draft" and inner.user_id == "jane"
    assert per_call.user_id == "bob" and per_call.use_case_id == outer.use_case_id
    again, _, _ = summarize()
    assert again.use_case_id != outer.use_case_id  # a new instance per call


def test_decorator_merges_at_each_call_not_at_decoration():
    @track(use_case_name="job")
    def job():
        return current_business_context()

    with track_context(use_case_name="job", use_case_id="fixed"):
        assert job().use_case_id == "fixed"  # same name as the caller's: its id is kept
    assert job().use_case_id != job().use_case_id


def test_exception_restores_outer_context():
    with track_context(user_id="outer"):
        with pytest.raises(KeyError), track_context(user_id="inner"):
            raise KeyError("boom")
        assert get_context()["user_id"] == "outer"

        @track(user_id="deco")
        def fails():
            raise RuntimeError("x")

        with pytest.raises(RuntimeError):
            fails()
        assert get_context()["user_id"] == "outer"
    assert get_context() == {}


def test_same_track_context_object_is_reentrant():
    scope = track_context(request_tags=["t"])
    with scope as first:
        with scope as second:
            assert second.request_tags == ("t",)
            with track_context(user_id="u"):
                pass
        assert current_business_context() is first
    assert current_business_context() is None


async def test_async_with():
    async with track_context(user_id="a") as ctx:
        assert ctx.user_id == "a" and get_context()["user_id"] == "a"
    assert get_context() == {}


def test_track_preserves_function_metadata_and_results():
    @track(user_id="u")
    def documented(x: int) -> int:
        """Doc."""
        return x * 2

    assert documented.__name__ == "documented" and documented.__doc__ == "Doc." and documented(2) == 4
    assert documented.__wrapped__ is not None

    @track
    def bare():
        return get_context()

    assert bare() == {}


# --- xProxy headers -------------------------------------------------------------------------
def test_layer_from_headers_pops_attribution_headers_case_insensitively():
    props = base64.b64encode(json.dumps({"b": 2, "n": None}).encode()).decode()
    headers = {
        "xProxy-User-ID": "bob",
        "XPROXY-LIMIT-IDS": " l1, l2 ,,",
        "xproxy-request-properties": '{"a": "1"}',
        "xProxy-UseCase-Properties": props,
        "xProxy-UseCase-Name": "uc",
        "xProxy-UseCase-ID": "id9",
        "xProxy-UseCase-Version": "3",
        "xProxy-UseCase-Step": "s",
        "xProxy-Account-Name": "acme",
        "xProxy-Request-Tags": "t1,t2",
        "xProxy-PriceAs-Category": "system.openai",
        "xProxy-PriceAs-Resource": "gpt-4o",
        "xProxy-Resource-Scope": "global",
        "xProxy-Api-Key": "secret",
        "X-Custom": "keep",
    }
    original = dict(headers)
    layer, remaining = layer_from_headers(headers)
    assert headers == original
    assert remaining == {"xProxy-Api-Key": "secret", "X-Custom": "keep"}
    assert layer == {
        "user_id": "bob",
        "limit_ids": ["l1", "l2"],
        "request_properties": {"a": "1"},
        "use_case_properties": {"b": "2", "n": None},
        "use_case_name": "uc",
        "use_case_id": "id9",
        "use_case_version": 3,
        "use_case_step": "s",
        "account_name": "acme",
        "request_tags": ["t1", "t2"],
        "price_as_category": "system.openai",
        "price_as_resource": "gpt-4o",
        "resource_scope": "global",
    }
    merged = merge(None, **layer)
    assert merged.use_case_id == "id9" and merged.limit_ids == ("l1", "l2")


def test_empty_header_values_clear():
    parent = chain(
        {
            "use_case_name": "u",
            "use_case_step": "s",
            "user_id": "jane",
            "limit_ids": ["a"],
            "request_properties": {"k": "v"},
        }
    )
    layer, _ = layer_from_headers(
        {"xProxy-User-ID": "", "xProxy-Limit-IDs": "", "xProxy-Request-Properties": "", "xProxy-UseCase-Name": ""}
    )
    assert merge(parent, **layer).as_dict() == {}


@pytest.mark.parametrize(
    ("header", "value", "rule"),
    [
        ("xProxy-Request-Properties", "not json", "JSON object or base64"),
        ("xProxy-UseCase-Properties", "[1, 2]", "JSON object"),
        ("xProxy-UseCase-Version", "v2", "must be an integer"),
    ],
)
def test_bad_header_values_name_the_header(header, value, rule):
    with pytest.raises(ValueError) as info:
        layer_from_headers({header: value})
    assert str(info.value).startswith(f"{header}:") and rule in str(info.value)


def test_header_values_are_validated_by_merge():
    layer, _ = layer_from_headers({"xProxy-User-ID": "has space"})
    with pytest.raises(ValueError, match=r"^user_id:"):
        merge(None, **layer)


def test_track_use_case_id_without_a_name_fails_at_the_call_not_at_decoration():
    @track(use_case_id="given")
    def job():
        return current_business_context().use_case_id

    with pytest.raises(ValueError, match=r"^use_case_id: requires a use_case_name in effect"):
        job()
    with track_context(use_case_name="u"):
        assert job() == "given"
    set_global_defaults()
    assert job() == "given"
