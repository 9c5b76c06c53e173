"""JsonObjectPrefix: forwarded text is always a valid prefix, and prefix + complete() parses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccproxy.translate.json_prefix import JsonObjectPrefix, repair_object

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


def feed_split(text: str, cuts: list[int]) -> tuple[str, JsonObjectPrefix]:
    checker = JsonObjectPrefix()
    out, last = [], 0
    for cut in [*sorted(set(c % (len(text) + 1) for c in cuts)), len(text)]:
        out.append(checker.feed(text[last:cut]))
        last = cut
    return "".join(out), checker


@settings(max_examples=300, deadline=None)
@given(objects, st.lists(st.integers(min_value=0), max_size=10), st.booleans())
def test_valid_objects_pass_through_unchanged(obj, cuts, ascii_only):
    text = json.dumps(obj, ensure_ascii=ascii_only)
    out, checker = feed_split(text, cuts)
    assert out == text
    assert checker.done and not checker.broken
    assert checker.complete() == ""


@settings(max_examples=300, deadline=None)
@given(objects, st.integers(min_value=0))
def test_any_truncation_completes_to_valid_json(obj, cut):
    text = json.dumps(obj, ensure_ascii=False)
    prefix = text[: cut % (len(text) + 1)]
    checker = JsonObjectPrefix()
    forwarded = checker.feed(prefix)
    assert forwarded == prefix
    assert isinstance(json.loads(forwarded + checker.complete()), dict)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.lists(st.integers(min_value=0), max_size=6))
def test_arbitrary_garbage_always_completes_to_an_object(text, cuts):
    out, checker = feed_split(text, cuts)
    assert text.startswith(out) or checker.broken or "\\" in out  # escaped control chars only
    assert isinstance(json.loads(out + checker.complete()), dict)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ('{"a": 1', {"a": 1}),
        ('{"a": "x', {"a": "x"}),
        ('{"a": "x\\', {"a": "x\\"}),
        ('{"a": "\\u00', {"a": "\x00"}),
        ('{"a": -', {"a": 0}),
        ('{"a": 1.', {"a": 1.0}),
        ('{"a": tr', {"a": True}),
        ('{"a"', {"a": None}),
        ('{"a":', {"a": None}),
        ('{"a": 1,', {"a": 1, "": None}),
        ('{"a": [1, ', {"a": [1, None]}),
        ('{"a": {"b": [', {"a": {"b": []}}),
        ('{"a": 01}', {"a": 0}),
        ("[1, 2]", {}),
        ('{"a": 1} extra', {"a": 1}),
    ],
)
def test_repairs(text, expected):
    assert json.loads(repair_object(text)) == expected


def test_control_characters_are_escaped_in_strings():
    checker = JsonObjectPrefix()
    out = checker.feed('{"a": "line1\nline2\ttab\x01"}')
    assert json.loads(out) == {"a": "line1\nline2\ttab\x01"}
    assert not checker.broken
