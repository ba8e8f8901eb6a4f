"""encode_json_records: a batch body's entries, byte for byte what encode_record makes of each
record that parse_json reads, or None (never other bytes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger._input import parse_json
from ailedger.auditlog.records import (
    count_members,
    encode_json_records,
    encode_record,
    json_structure,
)
from ailedger.errors import InputError

# strings that trip a scan of JSON bytes: quotes, escapes, brackets, the "},{" entry separator,
# colons, non-ASCII (also outside the BMP: UTF-16 order differs from code point order)
_TEXT = st.text(alphabet='ab:,"\\{}[]\n\u00e9\u20ac\U0001f600', max_size=8) | st.sampled_from(
    ["},{", '"},{"', "a:1.0", "sha256:5e5e", "1234567890123456"]
)
_NUMBERS = (
    st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([2**53 - 1, 2**53, -(2**53 - 1), 10**15, 0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1.0, -0.0, 0.5, 1e-4, 9.99e-5, 1e16, 1e21, 1.5e300, 123.25])
)
_VALUES = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=20,
)
_RECORDS = st.lists(st.dictionaries(_TEXT, _VALUES, max_size=4), min_size=1, max_size=6)


def _exact(body: bytes) -> list[bytes]:
    """The entries by the exact path: parse_json, then encode_record of each record."""
    return [encode_record(record) for record in parse_json(body, what="body")]


@settings(max_examples=200, deadline=None)
@given(records=_RECORDS, ascii_only=st.booleans())
def test_the_entries_are_encode_records(records: list[dict[str, Any]], ascii_only: bool) -> None:
    body = json.dumps(records, ensure_ascii=ascii_only).encode()
    try:
        want = _exact(body)
    except InputError:  # an integer beyond 2**53 - 1, say: the fast path must not take it
        assert encode_json_records(body) is None
        return
    got = encode_json_records(body)
    if b"\\ud8" in body or b"\\ud9" in body or b"\\uda" in body or b"\\udb" in body:
        # a surrogate escape (ensure_ascii writes one for each character outside the BMP)
        # is left to the exact path, which refuses the lone ones
        assert got is None or got == want
        return
    assert got == want


@pytest.mark.parametrize(
    "record",
    [
        {"a": 1.0, "b": -0.0, "c": 1e-7, "d": 1e21, "e": 0.5, "f": 123.25},
        {"n": 2**53 - 1, "m": -(2**53 - 1), "z": 10**15},
        {"\u00e9": 1, "z": 2, "\U0001f600": 3, "\ufb33": 4},
        {"s": '},{"x":1},{', "t": [{"a": 1}, {"b": 2}], "u": {"v": {}}},
        {"s": 'line\nbreak\ttab\u0001 \\ quote" \u2028'},
        {},
    ],
    ids=["floats", "integers", "non-ascii-names", "separators-inside", "escapes", "empty"],
)
def test_known_records_match_the_rfc8785_reference(record: dict[str, Any]) -> None:
    body = json.dumps([record, {"k": 1}, record], ensure_ascii=False).encode()
    got = encode_json_records(body)
    assert got is not None
    # rfc8785 (the reference package) and encode_record both
    assert got == [rfc8785.dumps(record), b'{"k":1}', rfc8785.dumps(record)]
    assert got == _exact(body)


@pytest.mark.parametrize(
    "body",
    [
        b'[{"a": 1, "a": 2}]',  # a duplicate name
        b'[{"a": 1}, {"b": {"c": 1, "c": 1}}]',  # a duplicate name, nested
        b'[{"a": NaN}]',
        b'[{"a": Infinity}]',
        b'[{"a": 1e999}]',
        b'[{"a": "\\ud800"}]',  # a lone surrogate
        b'[{"a": 1}, 2]',  # not an object
        b'{"a": 1}',  # not an array
        b'[{"a": 1}',  # not JSON
        b'[{"a": "\xff"}]',  # not UTF-8
        b'[{"a": 9007199254740993}]',  # an integer RFC 8785 cannot hold
        json.dumps([{"a": "x" * 70_000}]).encode(),  # an entry over 64 KiB
    ],
)
def test_what_the_exact_path_refuses_is_never_encoded(body: bytes) -> None:
    assert encode_json_records(body) is None


@settings(max_examples=200, deadline=None)
@given(value=_VALUES)
def test_members_are_counted_outside_strings(value: Any) -> None:
    def members(v: Any) -> int:
        if isinstance(v, dict):
            return len(v) + sum(members(x) for x in v.values())
        if isinstance(v, list):
            return sum(members(x) for x in v)
        return 0

    body = json.dumps(value, ensure_ascii=False).encode()
    assert count_members(body) == members(value)
    assert set(json_structure(body)) <= set(b"[]{}:")
