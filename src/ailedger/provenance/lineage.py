"""Lineage: the registered ancestors of an artifact (what it was made from), as a graph.

:func:`lineage` walks the parents recorded on chain breadth-first from one digest; the graph
is acyclic because a parent is registered before its child. Artifact names come from the
signed statements in the workspace's blobs, when they are there. :func:`render_tree` prints it
for a terminal and :func:`write_svg` draws it (SVG 1.1, parents left of their children).
"""

from __future__ import annotations

import base64
import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ailedger._fs import write_atomic
from ailedger.errors import AiledgerError, InputError
from ailedger.ledger import Ledger
from ailedger.provenance.registry import (
    NotRegistered,
    Registration,
    load_statement,
    provenance_registry,
)
from ailedger.workspace import Workspace

__all__ = ["Lineage", "lineage", "render_tree", "write_graph", "write_svg"]

_KIND_COLOURS = {"dataset": "#dbeafe", "model": "#dcfce7"}
_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _MARGIN = 260, 56, 80, 24, 20


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """The ancestors of ``root``: registrations by digest, names where known, and children.

    ``children`` lists the digests registered with ``root`` as a parent (its direct users).
    """

    root: bytes
    nodes: dict[bytes, Registration]
    names: dict[bytes, str]
    children: tuple[bytes, ...] = ()

    def edges(self) -> list[tuple[bytes, bytes]]:
        """(parent, child) pairs among the ancestors."""
        return [(p, d) for d, reg in self.nodes.items() for p in reg.parents]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": "0x" + self.root.hex(),
            "nodes": [
                {**reg.to_json(), "name": self.names.get(d)} for d, reg in self.nodes.items()
            ],
            "edges": [{"parent": "0x" + p.hex(), "child": "0x" + c.hex()} for p, c in self.edges()],
            "children": ["0x" + c.hex() for c in self.children],
        }


def lineage(workspace: Workspace, ledger: Ledger, digest: bytes) -> Lineage:
    """The registered ancestors of ``digest``; raises :class:`NotRegistered` if it is unknown."""
    registry = provenance_registry(workspace, ledger)
    nodes: dict[bytes, Registration] = {}
    queue = deque([digest])
    while queue:
        current = queue.popleft()
        if current in nodes:
            continue
        record = registry.registration(current)
        if record is None:
            raise NotRegistered(f"0x{current.hex()} is not registered")
        nodes[current] = Registration.from_chain(record)
        queue.extend(p for p in record.parents if p not in nodes)
    names: dict[bytes, str] = {}
    for d, reg in nodes.items():
        name = _statement_name(workspace, reg)
        if name is not None:
            names[d] = name
    return Lineage(root=digest, nodes=nodes, names=names, children=tuple(registry.children(digest)))


def render_tree(graph: Lineage) -> str:
    """The lineage as an indented tree, the artifact first and its parents below it."""
    lines: list[str] = []
    shown: set[bytes] = set()

    def walk(digest: bytes, prefix: str, connector: str) -> None:
        reg = graph.nodes[digest]
        label = f"{reg.kind} {graph.names.get(digest, '?')} 0x{digest.hex()[:16]}…"
        if digest in shown and reg.parents:
            lines.append(f"{prefix}{connector}{label} (parents shown above)")
            return
        shown.add(digest)
        lines.append(f"{prefix}{connector}{label}  block {reg.block_number} by {reg.owner}")
        child_prefix = prefix + {"": "", "└── ": "    "}.get(connector, "│   ")
        for i, parent in enumerate(reg.parents):
            walk(parent, child_prefix, "└── " if i == len(reg.parents) - 1 else "├── ")

    walk(graph.root, "", "")
    if graph.children:
        lines.append("used by: " + ", ".join("0x" + c.hex()[:16] + "…" for c in graph.children))
    return "\n".join(lines)


def write_graph(graph: Lineage, path: str | os.PathLike[str]) -> None:
    """Write a picture of the lineage; the suffix picks the format (only ``.svg``)."""
    suffix = Path(path).suffix.lower()
    if suffix != ".svg":
        raise InputError(
            f"cannot draw {suffix or 'a file without suffix'}: lineage pictures are SVG "
            "(name the file *.svg; PNG would need matplotlib, which ailedger does not require)"
        )
    write_svg(graph, path)


def write_svg(graph: Lineage, path: str | os.PathLike[str]) -> None:
    """Draw the lineage as SVG: one column per generation, arrows from parent to child."""
    depth: dict[bytes, int] = {graph.root: 0}
    order = [graph.root]
    for digest in order:
        for parent in graph.nodes[digest].parents:
            if depth.get(parent, -1) < depth[digest] + 1:
                depth[parent] = depth[digest] + 1
                order.append(parent)
    columns = max(depth.values()) + 1
    by_column: dict[int, list[bytes]] = {}
    for digest in graph.nodes:
        by_column.setdefault(depth[digest], []).append(digest)
    rows = max(len(v) for v in by_column.values())
    width = 2 * _MARGIN + columns * _BOX_W + (columns - 1) * _GAP_X
    height = 2 * _MARGIN + rows * _BOX_H + (rows - 1) * _GAP_Y
    where: dict[bytes, tuple[int, int]] = {}
    for col, digests in by_column.items():
        x = _MARGIN + (columns - 1 - col) * (_BOX_W + _GAP_X)
        for row, digest in enumerate(digests):
            where[digest] = (x, _MARGIN + row * (_BOX_H + _GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>lineage of 0x" + graph.root.hex() + "</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
        "</defs>",
    ]
    for parent, child in graph.edges():
        px, py = where[parent]
        cx, cy = where[child]
        parts.append(
            f'<line x1="{px + _BOX_W}" y1="{py + _BOX_H // 2}" x2="{cx}" y2="{cy + _BOX_H // 2}" '
            'stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for digest, reg in graph.nodes.items():
        x, y = where[digest]
        colour = _KIND_COLOURS.get(reg.kind, "#f3f4f6")
        stroke = "#111" if digest == graph.root else "#777"
        name = escape(graph.names.get(digest, "(name unknown)"))
        parts.append(
            f'<g><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
            f'fill="{colour}" stroke="{stroke}"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-weight="bold">{escape(reg.kind)}: {name}</text>'
            f'<text x="{x + 10}" y="{y + 42}" font-family="monospace" font-size="11">'
            f"0x{digest.hex()[:28]}…</text></g>"
        )
    parts.append("</svg>\n")
    write_atomic(Path(path), "\n".join(parts).encode(), mode=0o644)


def _statement_name(workspace: Workspace, reg: Registration) -> str | None:
    try:
        envelope = load_statement(workspace, reg)
    except AiledgerError:
        return None
    try:
        statement = json.loads(base64.b64decode(envelope.get("payload", "")))
        name = statement["subject"][0]["name"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
