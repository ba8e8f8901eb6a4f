"""The consortium file: round trip, and every bad field refused with one line (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.note import verifier_key
from ailedger.consortium import (
    MAX_FILE_BYTES,
    Consortium,
    Member,
    parse_consortium,
    parse_ether,
)
from ailedger.errors import InputError

A = "0x" + "ab" * 20
B = "0x" + "cd" * 20
LOG_KEY = verifier_key("example.org/log", Ed25519PrivateKey.generate().public_key())


def good() -> dict[str, Any]:
    return {
        "format": 1,
        "name": "clinics",
        "chain_id": 31337,
        "rpc": "http://127.0.0.1:8545",
        "contracts": {
            "AnchorRegistry": "0x" + "01" * 20,
            "ProvenanceRegistry": "0x" + "02" * 20,
            "TrainingTask": "0x" + "03" * 20,
        },
        "members": [
            {"name": "org-a", "account": A, "log_key": LOG_KEY, "sharing_key": "0a" * 32},
            {"account": B},
        ],
    }


def parse(doc: dict[str, Any]) -> Consortium:
    return parse_consortium(tomli_w.dumps(doc).encode(), what="c.toml")


def test_round_trip() -> None:
    first = parse(good())
    assert first.chain_id == 31337 and first.members[0].log_key == LOG_KEY
    assert first.members[0].account.lower() == A and first.members[1].name == ""
    assert parse_consortium(first.to_toml().encode()) == first
    updated = first.with_member(Member(account=B.upper().replace("0X", "0x"), name="org-b"))
    assert [m.name for m in updated.members] == ["org-a", "org-b"]
    added = first.with_member(Member(account="0x" + "ef" * 20))
    assert len(added.members) == 3


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = good()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DROP = object()

BAD = [
    (("format",), 2, "unknown format 2"),
    (("format",), "1", "format must be the integer 1"),
    (("format",), _DROP, "format must be"),
    (("chain_id",), 0, "chain_id must be from 1"),
    (("chain_id",), 2**63, "chain_id must be from 1"),
    (("chain_id",), "31337", "chain_id must be an integer"),
    (("chain_id",), True, "chain_id must be an integer"),
    (("rpc",), "ws://127.0.0.1:8545", "rpc"),
    (("rpc",), "file:///etc/passwd", "rpc"),
    (("rpc",), 8545, "rpc must be"),
    (("name",), "", "name must be"),
    (("name",), "a\nb", "name must be"),
    (("name",), "x" * 101, "name must be"),
    (("contracts", "AnchorRegistry"), "0x1234", "contracts.AnchorRegistry must be a 0x address"),
    (("contracts", "ProvenanceRegistry"), _DROP, "contracts.ProvenanceRegistry is missing"),
    (("contracts", "Other"), "0x" + "04" * 20, "unknown contract 'Other'"),
    (("contracts",), "0x" + "04" * 20, "contracts must be a table"),
    (("members",), [], "members is empty"),
    (("members", 0, "account"), "0xnothex" + "0" * 34, "members[0].account must be a 0x"),
    (("members", 0, "account"), _DROP, "members[0]: account is missing"),
    (("members", 1, "account"), A, "listed twice"),
    (("members", 0, "log_key"), "not+a+key", "members[0].log_key"),
    (("members", 0, "sharing_key"), "ab" * 31, "members[0].sharing_key must be"),
    (("members", 0, "role"), "admin", "unknown key 'role'"),
    (("extra",), 1, "unknown key 'extra'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_each_bad_field_is_refused(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(InputError, match=None) as caught:
        parse(changed(path, value))
    text = str(caught.value)
    assert message in text and text.startswith("c.toml: ") and "\n" not in text


def test_bad_bytes_are_refused() -> None:
    with pytest.raises(InputError, match="not valid TOML"):
        parse_consortium(b"format = 1\nformat = 2\n", what="c.toml")
    with pytest.raises(InputError, match="not UTF-8"):
        parse_consortium(b"name = '\xff'\n", what="c.toml")
    with pytest.raises(InputError, match="larger than"):
        parse_consortium(b"#" * (MAX_FILE_BYTES + 1), what="c.toml")
    with pytest.raises(InputError, match="members must be an array"):
        parse({**good(), "members": {"account": A}})


@pytest.mark.parametrize(
    ("text", "wei"), [("1", 10**18), ("0.5", 5 * 10**17), ("2.000000000000000001", 2 * 10**18 + 1)]
)
def test_parse_ether(text: str, wei: int) -> None:
    assert parse_ether(text) == wei


@pytest.mark.parametrize(
    "text", ["0", "-1", "1e3", "1_0", "١", " 1", "1.", "0.0000000000000000001"]
)
def test_parse_ether_refuses(text: str) -> None:
    with pytest.raises(InputError, match="--ether"):
        parse_ether(text)


def test_cli_refuses_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ailedger.cli import main

    bad = tmp_path / "c.toml"
    bad.write_text(tomli_w.dumps(changed(("chain_id",), "one")))
    monkeypatch.setattr(sys, "argv", ["ailedger", "consortium", "show", str(bad)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1
    assert lines[0].startswith("error: ") and "chain_id must be an integer" in lines[0]
    good_file = tmp_path / "good.toml"
    good_file.write_text(tomli_w.dumps(good()))
    monkeypatch.setattr(sys, "argv", ["ailedger", "consortium", "show", str(good_file), "--json"])
    main()
    assert '"name": "clinics"' in capsys.readouterr().out


def test_add_member_refuses_another_consortium(tmp_path: Path) -> None:
    from ailedger.consortium import check_fits
    from ailedger.workspace import Workspace

    made = parse(good())
    mine = dict(made.contracts)
    ws = Workspace(path=tmp_path, config={"chain": {"chain_id": 31337}, "contracts": {}})
    ws.config["contracts"]["31337"] = mine
    check_fits(ws, made, "c.toml")  # the same consortium: accepted
    ws.config["contracts"]["31337"] = {**mine, "TrainingTask": "0x" + "09" * 20}
    with pytest.raises(InputError, match="it is another consortium"):
        check_fits(ws, made, "c.toml")
    ws.config["chain"]["chain_id"] = 1
    with pytest.raises(InputError, match="on chain 31337, this workspace is on chain 1"):
        check_fits(ws, made, "c.toml")


def test_join_takes_no_rpc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ailedger.cli import main

    file = tmp_path / "c.toml"
    file.write_text(tomli_w.dumps(good()))
    argv = ["ailedger", "init", "--join", str(file), "--rpc", "http://127.0.0.1:1"]
    monkeypatch.setattr(sys, "argv", [*argv, "-w", str(tmp_path / "ws")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    assert "--join takes the node and contracts from the file" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()
