"""The documents in docs/ say what the code does: the API reference builds from the docstrings,
and every key or field the format references list is one the code reads or writes, and back."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from ailedger import _configfile, consortium
from ailedger.ledger._settings import LedgerSettings
from ailedger.provenance import bundle

DOCS = Path(__file__).resolve().parents[1] / "docs"
SRC = Path(__file__).resolve().parents[1] / "src" / "ailedger"


def _build_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_api", DOCS / "build_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_keys(markdown: str) -> list[str]:
    """The backquoted names in the first column of the Markdown tables of ``markdown``."""
    return re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", markdown, re.M)


def _sections(markdown: str) -> dict[str, str]:
    """``## `[name]` ...`` sections of config.md, by table name (``contracts.<chain_id>``...)."""
    parts = re.split(r"^## `\[([^\]]+)\]`.*$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    build_api = _build_api()
    modules = build_api.public_modules()
    assert "ailedger.crypto.envelope" in modules
    assert not any(m.startswith("ailedger.cli") or "._" in m for m in modules)
    problems = build_api.build(tmp_path, modules, search=False)
    assert problems == []
    page = (tmp_path / "ailedger" / "crypto" / "envelope.html").read_text()
    assert "AILSEAL" in page and "SealWriter" in page
    for name in ("provenance/bundle", "provenance/dsse", "consortium", "workspace", "errors"):
        assert (tmp_path / "ailedger" / f"{name}.html").is_file(), name


def test_config_reference_names_only_keys_the_code_reads() -> None:
    sections = _sections((DOCS / "config.md").read_text())
    assert {"chain", "log", "contracts.<chain_id>", "witness", "service", "train"} <= set(sections)
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    for section, text in sections.items():
        table = section.split(".")[0]
        assert f'"{table}"' in source, f"[{table}] is not read anywhere in src/"
        for key in _table_keys(text):
            assert f'"{key}"' in source, f"[{section}] {key} is not read anywhere in src/"


def test_config_reference_lists_every_checked_key_with_its_default() -> None:
    sections = _sections((DOCS / "config.md").read_text())
    chain = sections["chain"]
    assert set(_table_keys(chain)) == set(_configfile._CHAIN)
    assert set(_table_keys(sections["log"])) >= set(_configfile._LOG) | {"backend", "dsn"}
    defaults = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| `([0-9.]+)` \|", chain, re.M))
    settings = LedgerSettings()
    for field in dataclasses.fields(LedgerSettings):
        if field.name in defaults:
            assert float(defaults[field.name]) == getattr(settings, field.name), field.name
    assert {"confirmations", "retries", "backoff", "request_timeout"} <= set(defaults)


def test_consortium_reference_matches_the_parser() -> None:
    text = (DOCS / "consortium-file.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    parsed = consortium.parse_consortium(example.group(1).encode())
    assert parsed.name == "clinics" and len(parsed.members) == 1
    keys = set(_table_keys(text))
    assert keys == consortium._TOP_KEYS | consortium._MEMBER_KEYS


def test_bundle_reference_lists_every_field() -> None:
    text = (DOCS / "bundle.md").read_text()
    fields = _table_keys(text.split("## The envelope")[0])
    sample = bundle.Bundle(
        name="m",
        kind="model",
        digest=bundle.Digest(bytes(32)),
        registrant="0x" + "11" * 20,
        chain_id=1,
        registry="0x" + "22" * 20,
        statement_digest=bundle.Digest(bytes(32)),
        envelope=b"{}",
    )
    assert set(fields) == set(sample.to_json())
    assert bundle.MEDIA_TYPE in text
