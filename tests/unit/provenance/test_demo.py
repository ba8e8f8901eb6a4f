"""The provenance step of the main demo, on a workspace made by ``Workspace.init``."""

from __future__ import annotations

from pathlib import Path

import joblib
import pytest

from ailedger.provenance import AlreadyRegistered, demo_provenance
from ailedger.workspace import Workspace


def test_demo_registers_lineage_and_loads_the_model(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", passphrase=lambda: "demo", unsafe_fast_kdf=True)
    data = tmp_path / "digits.csv"
    data.write_text("pixel0,label\n0,3\n")
    model = tmp_path / "model.joblib"
    joblib.dump({"coef": [0.5, -1.0]}, model)
    report = demo_provenance(ws, "demo", data, model)
    assert report["verified"] is True
    assert report["loaded"] == "dict"
    dataset = report["dataset"]
    assert report["model"]["parents"] == [{"owner": dataset["owner"], "digest": dataset["digest"]}]
    assert report["model"]["owner"] == dataset["owner"] == ws.keystore().address
    assert report["lineage"] == [report["model"]["digest"], report["dataset"]["digest"]]

    with pytest.raises(AlreadyRegistered, match="already registered"):
        demo_provenance(ws, "demo", data, model)
