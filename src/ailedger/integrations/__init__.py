"""Bridges to the tools data scientists already use, each importing its tool only when used.

- :mod:`ailedger.integrations.mlflow`: register an MLflow-logged model's artifact folder on
  chain (with its bundle), tag its digest in MLflow, and load it verified and audited.
"""

from __future__ import annotations

__all__: list[str] = []
