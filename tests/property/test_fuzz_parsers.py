"""Every parser of outside data returns a valid value or raises an AiledgerError, for any input.

The targets are in :mod:`tests.property.fuzz_targets` (one per parser: JSON, JSON lines,
checkpoints, signed notes, tlog-proof, tiles, the sealed format, task files, config, JSON-RPC
replies). Each is fed three kinds of input: random bytes; valid documents mutated (bit flips,
truncations, duplications, deep nesting, huge numbers, non-UTF-8, U+2028, CRLF); and documents
built field by field to be nearly valid. For signed and sealed formats a mutated document that
still verifies must mean what the original meant (else the target raises ``Forgery``).
A longer campaign over the same targets is ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ailedger.auditlog.checkpoint import Checkpoint, open_checkpoint
from ailedger.auditlog.note import open_note, sign_note
from ailedger.crypto import envelope
from ailedger.errors import AiledgerError
from tests.property import fuzz_targets as ft

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = sorted(ft.TARGETS)


def holds(target: ft.Target, data: bytes) -> None:
    """The property: ``data`` parses, or an AiledgerError says why not (Forgery propagates)."""
    with contextlib.suppress(AiledgerError):
        target.run(data)


def ops(tokens: tuple[bytes, ...]) -> st.SearchStrategy[list[ft.Op]]:
    op = st.tuples(
        st.sampled_from(ft.OPS),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
        st.binary(max_size=12) | st.sampled_from(tokens),
    )
    return st.lists(op, min_size=1, max_size=4)


# --------------------------------------------------------------------------- every target


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_valid(name: str) -> None:
    target = ft.TARGETS[name]
    for seed in target.seeds:
        target.run(seed)


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(data=st.binary(max_size=1024))
def test_random_bytes(name: str, data: bytes) -> None:
    holds(ft.TARGETS[name], data)


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    target = ft.TARGETS[name]
    seed = data.draw(st.sampled_from(target.seeds), label="seed")
    mutated = ft.apply_ops(seed, data.draw(ops(target.all_tokens), label="ops"))
    holds(target, mutated)


def test_mutations_reach_every_kind() -> None:
    seed = b'{"a":[1,2]}'
    results = {kind: ft.apply_ops(seed, [(kind, 3, 5, b"X")]) for kind in ft.OPS}
    assert all(out != seed for out in results.values())
    assert ft.apply_ops(seed, [("truncate", 4, 0, b"")]) == b'{"a"'
    assert ft.apply_ops(b"[", [("repeat", 0, 10_000, b"")]).count(b"[") == 10_001


# --------------------------------------------------------------------------- near-valid JSON


def _number_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers().map(str),
        st.integers(4000, 6000).map(lambda n: "9" * n),
        st.sampled_from(["1e999", "-1e999", "1E400", "-0", "0.1e-400", "1e308", "2e308"]),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )


def _string_text() -> st.SearchStrategy[str]:
    escape = st.sampled_from(["\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0000", "\\n", '\\"'])
    raw = st.text(max_size=8)
    odd = st.sampled_from(["\u2028", "\x85", "\x01", "\\", '"'])
    parts = st.lists(escape | raw | odd, max_size=4)
    return parts.map(lambda xs: '"' + "".join(xs) + '"')


json_text = st.recursive(
    st.one_of(_number_text(), _string_text(), st.sampled_from(["true", "null", "NaN"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(_string_text(), inner), max_size=4).map(
            lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=12,
)


@FAST
@given(text=json_text, depth=st.integers(0, 200), wrap=st.sampled_from(["[]", "{}"]))
@example(text="1", depth=65, wrap="[]")
@example(text='"\\ud800"', depth=0, wrap="[]")
@example(text="9" * 5000, depth=0, wrap="[]")
@example(text="1e999", depth=0, wrap="[]")
def test_json_near_valid(text: str, depth: int, wrap: str) -> None:
    opened = '{"k":' if wrap == "{}" else "["
    document = opened * depth + text + wrap[1] * depth
    holds(ft.TARGETS["json"], document.encode("utf-8", "surrogatepass"))
    holds(ft.TARGETS["rpc-reply"], b"\x00" + document.encode("utf-8", "surrogatepass"))


@FAST
@given(
    lines=st.lists(json_text, min_size=1, max_size=5),
    separator=st.sampled_from(["\n", "\r\n", "\n\n", "\u2028", "\x85", "\r"]),
)
def test_json_lines_near_valid(lines: list[str], separator: str) -> None:
    holds(ft.TARGETS["json-lines"], separator.join(lines).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[" + b"9" * 5000 + b"]", "digits"),
        (b"[1e999]", "finite"),
        (b'{"a":-1E400}', "finite"),
        (b'["\\ud800"]', "surrogate"),
        (b'{"x":"\\udc00\\ud83d"}', "surrogate"),
    ],
)
def test_json_refuses_values_it_cannot_represent(document: bytes, message: str) -> None:
    from ailedger._input import parse_json
    from ailedger.errors import InputError

    with pytest.raises(InputError, match=message):
        parse_json(document, what="x")


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'[{"a":'])
def test_json_nesting_is_refused_whatever_the_recursion_limit(opener: bytes) -> None:
    import sys

    from ailedger._input import parse_json
    from ailedger.errors import InputError

    assert sys.getrecursionlimit() >= 100_000  # web3, imported by the targets, raised it
    with pytest.raises(InputError, match="nested"):
        parse_json(opener * 200_000, what="x")


def test_json_keeps_numbers_and_pairs_it_can_represent() -> None:
    from ailedger._input import parse_json

    value = parse_json(b'["\\ud83d\\ude00", 1e308, -0.0, ' + b"9" * 4000 + b"]", what="x")
    assert value[0] == "\U0001f600"
    assert value[1] == 1e308
    assert value[3] == int("9" * 4000)


# --------------------------------------------------------------------------- checkpoints, notes

_decimal = st.one_of(
    st.integers(0, 2**64 + 5).map(str),
    st.sampled_from(["", "01", "-1", "+1", "1_0", " 1", "\u0661\u0662", "1" * 5000]),
)
_root = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=50),
)
_line = st.text(max_size=30)


@FAST
@given(
    origin=_line,
    size=_decimal,
    root=_root,
    extensions=st.lists(_line, max_size=3),
    end=st.sampled_from(["\n", "", "\r\n"]),
)
@example(origin="o", size="1" * 5000, root="A" * 43 + "=", extensions=[], end="\n")
def test_checkpoint_near_valid(
    origin: str, size: str, root: str, extensions: list[str], end: str
) -> None:
    text = "\n".join([origin, size, root, *extensions]) + end
    holds(ft.TARGETS["checkpoint"], text.encode("utf-8", "surrogatepass"))


@FAST
@given(text=st.text(max_size=200))
def test_any_signed_text_opens_to_itself_and_its_mutations_do_not(text: str) -> None:
    """A note over any text opens to exactly that text; flipping any byte of it never does."""
    body = text + "\n"
    try:
        note = sign_note(body, ft.ORIGIN, ft.NOTE_KEY)
    except AiledgerError:
        return  # a control character, or not encodable: refused before signing
    assert open_note(note, [ft.VERIFIER]).text == body
    for position in range(0, len(body.encode()), 7):
        mutated = bytearray(note)
        mutated[position] ^= 0x20
        with pytest.raises(AiledgerError):
            open_note(bytes(mutated), [ft.VERIFIER])


@pytest.mark.parametrize("name", [b"\x80", b"caf\xc3", b"\xed\xa0\x80"])
def test_verifier_key_with_undecodable_name_is_refused(name: bytes) -> None:
    from ailedger.errors import InputError

    key = ft.VERIFIER.verifier_key().encode().split(b"+", 1)[1]
    with pytest.raises(InputError, match="UTF-8"):
        ft.run_verifier_key(name + b"+" + key)


@FAST
@given(size=st.integers(0, 2**64 - 1), root=st.binary(min_size=32, max_size=32), flip=st.data())
def test_signed_checkpoint_bit_flips_never_verify(
    size: int, root: bytes, flip: st.DataObject
) -> None:
    checkpoint = Checkpoint(origin=ft.ORIGIN, size=size, root_hash=root)
    note = bytearray(ft.sign_checkpoint(checkpoint, ft.ORIGIN, ft.NOTE_KEY))
    position = flip.draw(st.integers(0, len(note) - 1))
    note[position] ^= 1 << flip.draw(st.integers(0, 7))
    with pytest.raises(AiledgerError):  # one signer: every byte is text, name or signature
        open_checkpoint(bytes(note), [ft.VERIFIER])


@pytest.mark.parametrize(
    "text",
    [
        "o\n" + "1" * 5000 + "\n" + "A" * 43 + "=\n",
        "o\n18446744073709551616\n" + "A" * 43 + "=\n",
        "o\n\u0661\n" + "A" * 43 + "=\n",
    ],
)
def test_checkpoint_refuses_sizes_beyond_64_bits(text: str) -> None:
    from ailedger.errors import InputError

    with pytest.raises(InputError, match="size"):
        Checkpoint.parse(text)


# --------------------------------------------------------------------------- tlog-proof, tiles


@FAST
@given(
    index=_decimal,
    extra=st.none() | _root,
    hashes=st.lists(_root, max_size=4),
    checkpoint=st.sampled_from([ft.NOTE, b"", b"\xff", ft.NOTE_100]),
)
@example(index="1" * 5000, extra=None, hashes=[], checkpoint=ft.NOTE)
def test_receipt_near_valid(
    index: str, extra: str | None, hashes: list[str], checkpoint: bytes
) -> None:
    lines = ["c2sp.org/tlog-proof@v1"]
    if extra is not None:
        lines.append("extra " + extra)
    lines += ["index " + index, *hashes]
    head = "".join(line + "\n" for line in lines) + "\n"
    holds(ft.TARGETS["tlog-proof"], head.encode("utf-8", "surrogatepass") + checkpoint)


def test_receipt_refuses_an_index_beyond_64_bits() -> None:
    from ailedger.auditlog.proof import Receipt
    from ailedger.errors import InputError

    for digits in ("1" * 5000, str(2**64)):
        with pytest.raises(InputError, match="index"):
            Receipt.parse(f"c2sp.org/tlog-proof@v1\nindex {digits}\n\n".encode() + ft.NOTE)


_groups = st.lists(st.from_regex(r"[0-9]{3}", fullmatch=True), min_size=1, max_size=8)


@FAST
@given(
    prefix=st.sampled_from(["tile/0/", "tile/3/", "tile/entries/", "tile/64/"]),
    groups=_groups,
    many=st.integers(0, 3000),
    width=st.sampled_from(["", ".p/1", ".p/255", ".p/256", ".p/0", ".p/01"]),
)
@example(prefix="tile/0/", groups=["001"], many=2000, width="")
def test_tile_paths_near_valid(prefix: str, groups: list[str], many: int, width: str) -> None:
    path = prefix + "x000/" * many + "/".join("x" + g for g in groups[:-1])
    path += ("/" if len(groups) > 1 else "") + groups[-1] + width
    holds(ft.TARGETS["tile-path"], path.encode())


def test_tile_paths_refuse_indexes_beyond_64_bits() -> None:
    from ailedger.auditlog import _merkle
    from ailedger.errors import InputError

    for path in ("tile/0/" + "x001/" * 2000 + "000", "tile/entries/" + "x999/" * 7 + "000"):
        with pytest.raises(InputError):
            ft.run_tile_path(path.encode())
    assert _merkle.parse_tile_path("tile/0/x018/x446/x744/x073/x709/x551/615").index == 2**64 - 1


# --------------------------------------------------------------------------- sealed, task, config


@FAST
@given(
    magic=st.sampled_from([envelope.MAGIC, b"AILSEAX", b""]),
    version=st.sampled_from([0, 1, 2, 3, 255]),
    suite=st.sampled_from([0, 1, 2]),
    chunk=st.sampled_from([0, 1023, 1024, 4096, 16 * 1024 * 1024, 2**32 - 1]),
    sender=st.sampled_from([bytes.fromhex(ft.SEALER.address[2:]), bytes(20)]),
    context=st.sampled_from(ft.CONTEXTS) | st.binary(max_size=40),
    context_length=st.sampled_from([None, 0, 1, 4096, 4097, 65535]),
    count=st.integers(0, 3),
    body=st.binary(max_size=600),
)
def test_sealed_header_near_valid(
    magic: bytes,
    version: int,
    suite: int,
    chunk: int,
    sender: bytes,
    context: bytes,
    context_length: int | None,
    count: int,
    body: bytes,
) -> None:
    """Version 2 header fields (see crypto/envelope.py), each valid or just off."""
    length = len(context) if context_length is None else context_length
    header = magic + struct.pack(">BBI7s20sH", version, suite, chunk, bytes(7), sender, length)
    header += context + struct.pack(">H", count)
    holds(ft.TARGETS["sealed"], header + body)


@FAST
@given(st.data())
def test_sealed_bit_flips_never_open(data: st.DataObject) -> None:
    sealed = bytearray(data.draw(st.sampled_from(ft.SEALED)))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(AiledgerError):  # the header is in every chunk's AAD, all is signed
        ft.run_sealed(bytes(sealed))


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@FAST
@given(st.data())
def test_task_file_near_valid(data: st.DataObject) -> None:
    doc: dict[str, Any] = ft.TASK_REF.to_json()
    for _ in range(data.draw(st.integers(1, 3))):
        spec = doc.get("spec")
        where = spec if isinstance(spec, dict) and spec and data.draw(st.booleans()) else doc
        if not where:
            break
        key = data.draw(st.sampled_from(sorted(where)))
        if data.draw(st.booleans()):
            where[key] = data.draw(json_values)
        else:
            del where[key]
    holds(ft.TARGETS["task-file"], json.dumps(doc).encode())


@pytest.mark.parametrize("digits", [400, 5000])
def test_config_with_huge_numbers_is_refused(digits: int) -> None:
    """4300+ digits overflow int() (tomllib raised ValueError), 400 a float (OverflowError)."""
    holds(ft.TARGETS["config"], b"[chain]\nbackoff_max = " + b"9" * digits + b"\n")


_toml_scalar = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(10**300, 10**400),
    st.floats(),
    st.text(max_size=20),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@FAST
@given(
    chain=st.dictionaries(
        st.sampled_from(
            [
                "backend",
                "rpc",
                "confirmations",
                "retries",
                "backoff",
                "backoff_max",
                "request_timeout",
                "receipt_timeout",
                "poll_interval",
                "contracts",
            ]
        ),
        _toml_scalar | st.dictionaries(st.text(max_size=5), _toml_scalar, max_size=2),
        max_size=5,
    ),
    log=st.dictionaries(st.sampled_from(["origin"]), _toml_scalar),
)
@example(chain={"backoff_max": 10**400}, log={})
def test_config_near_valid(chain: dict[str, Any], log: dict[str, Any]) -> None:
    holds(ft.TARGETS["config"], tomli_w.dumps({"format": 1, "chain": chain, "log": log}).encode())


_rpc_ids = st.one_of(
    st.just(1), st.sampled_from(["1", True, 1.0, None, 2**70, [1], -1]), st.integers()
)


@FAST
@given(
    method=st.sampled_from(ft.RPC_METHODS),
    version=st.sampled_from(["2.0", "1.0", 2, None]),
    request_id=_rpc_ids,
    body=st.one_of(
        st.tuples(st.just("result"), json_values),
        st.tuples(
            st.just("result"),
            st.sampled_from(["0x", "0x1", "0x" + "f" * 65, "0xzz", "1", "", "0x" + "ab" * 32]),
        ),
        st.tuples(
            st.just("error"),
            st.fixed_dictionaries(
                {"code": json_values | st.integers(), "message": json_values | st.text()}
            ),
        ),
        st.tuples(st.just("error"), json_values),
    ),
)
def test_rpc_reply_near_valid(
    method: str, version: Any, request_id: Any, body: tuple[str, Any]
) -> None:
    reply = {"jsonrpc": version, "id": request_id, body[0]: body[1]}
    prefix = bytes([ft.RPC_METHODS.index(method)])
    holds(ft.TARGETS["rpc-reply"], prefix + json.dumps(reply).encode())


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("row", range(len(ft.STORED_ROWS)))
def test_stored_tiles_of_the_wrong_type_or_size_are_refused(mode: int, row: int) -> None:
    """A tile row stored as text, with a text width, as an integer or cut short is corrupt."""
    from ailedger.errors import VerificationError

    _, _, width, blob = ft.STORED_ROWS[row]
    tampered = bytes([mode << 4 | row]) + width.to_bytes(2, "big") + blob[:-1]
    with pytest.raises(VerificationError, match=r"corrupt|missing|wrong width"):
        ft.run_stored_tile(tampered)
