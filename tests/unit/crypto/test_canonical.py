"""RFC 8785 canonical JSON: the spec's vectors, and agreement with the reference package."""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.crypto.canonical import _plain, canonical_json, format_number
from ailedger.errors import InputError

KAT = json.loads((Path(__file__).parents[2] / "kat" / "rfc8785.json").read_text())


def double(hex_bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(hex_bits))[0])


@pytest.mark.parametrize("vector", KAT["numbers"], ids=lambda v: v["ieee754"])
def test_rfc8785_appendix_b_numbers(vector: dict[str, str]) -> None:
    value = double(vector["ieee754"])
    assert format_number(value) == vector["expected"]
    assert canonical_json([value]) == f"[{vector['expected']}]".encode()


@pytest.mark.parametrize("document", KAT["documents"], ids=lambda d: d["name"])
def test_rfc8785_test_files(document: dict[str, str]) -> None:
    assert canonical_json(json.loads(document["input"])) == document["expected"].encode()


def test_random_doubles_match_the_reference() -> None:
    rng = random.Random(8785)
    for _ in range(20000):
        value = double(f"{rng.getrandbits(64):016x}")
        if value != value or value in (float("inf"), float("-inf")):
            continue
        assert format_number(value) == rfc8785.dumps(value).decode(), repr(value)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_any_value_matches_the_reference(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        with pytest.raises(InputError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [2**53], {1: "int key"}, {"x": {1, 2}}, "\ud800", b"bytes"],
)
def test_values_json_cannot_hold(value: object) -> None:
    with pytest.raises(InputError):
        canonical_json(value)


def test_circular_and_too_deep_values_are_input_errors() -> None:
    circular: dict[str, object] = {}
    circular["self"] = circular
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (circular, deep):
        with pytest.raises(InputError, match="circular or too deep"):
            canonical_json(value)


def test_floats_taking_the_c_encoder_match_the_reference() -> None:
    # Around and inside 1e-4 <= |x| < 1e16, where Python's repr is used as it is: random
    # magnitudes, the range's edges and their neighbours, whole numbers (which are not).
    rng = random.Random(6962)
    edges = [1e-4, 1e16, 9.999999999999999e-05, 9999999999999998.0, 1e15 + 0.5, 0.1 + 0.2]
    values = edges + [math.nextafter(x, 0.0) for x in edges] + [2.0, 123.0, -0.0, 0.0]
    values += [rng.choice((-1, 1)) * 10 ** rng.uniform(-6, 18) for _ in range(20000)]
    values += [round(rng.uniform(-1e6, 1e6), rng.randrange(8)) for _ in range(5000)]
    for value in values:
        record = {"score": value, "scores": [value, 0.5]}
        assert canonical_json(record) == rfc8785.dumps(record), repr(value)
        assert canonical_json(value) == rfc8785.dumps(value), repr(value)
        in_range = 1e-4 <= abs(value) < 1e16 and not value.is_integer()
        assert _plain(record) is in_range, repr(value)  # the C encoder took it
