"""Lineage: the registered ancestors of an artifact (what it was made from), as a graph.

:func:`lineage` walks the parents recorded on chain breadth-first from one registration; a
node is a ``(registrant, digest)`` pair, so lineage crosses organisations (a model of one
account derived from a dataset of another). The graph is acyclic because a parent is
registered before its child. Artifact names come from the
signed statements in the workspace's blobs, when they are there. :func:`render_tree` prints it
for a terminal; :func:`write_svg` (SVG 1.1) and :func:`write_png` (matplotlib's Agg renderer, the
``graph`` extra) draw the same layout, parents left of their children, and :func:`write_graph`
picks one of them by the file's suffix.
"""

from __future__ import annotations

import base64
import io
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias
from xml.sax.saxutils import escape

from ailedger._fs import write_atomic
from ailedger._input import parse_json
from ailedger.errors import AiledgerError, InputError
from ailedger.ledger import Ledger
from ailedger.ledger.provenance import parse_address
from ailedger.provenance.digest import Digest
from ailedger.provenance.registry import (
    NotRegistered,
    RegisteredByOther,
    Registration,
    load_statement,
    provenance_registry,
)
from ailedger.workspace import Workspace

__all__ = [
    "Lineage",
    "graph_format",
    "lineage",
    "render_tree",
    "write_graph",
    "write_png",
    "write_svg",
]

#: a registration: (registrant's address, digest)
Ref: TypeAlias = tuple[str, bytes]

_KIND_COLOURS = {"dataset": "#dbeafe", "model": "#dcfce7"}
_OTHER_COLOUR, _ARROW_COLOUR, _ROOT_STROKE, _STROKE = "#f3f4f6", "#555", "#111", "#777"
#: sizes in SVG pixels; the PNG uses one point per SVG pixel, rendered at _PNG_DPI
_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _MARGIN = 260, 56, 80, 24, 20
_PNG_DPI = 144


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """The ancestors of ``root``: registrations by ``(registrant, digest)``, names where known,
    and children.

    ``children`` lists the registrations made with ``root`` as a parent (its direct users).
    """

    root: Ref
    nodes: dict[Ref, Registration]
    names: dict[Ref, str]
    children: tuple[Ref, ...] = ()

    def edges(self) -> list[tuple[Ref, Ref]]:
        """(parent, child) pairs among the ancestors."""
        return [(p, d) for d, reg in self.nodes.items() for p in reg.parents]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(Digest(self.root[1])),
            "root_owner": self.root[0],
            "nodes": [
                {**reg.to_json(), "name": self.names.get(d)} for d, reg in self.nodes.items()
            ],
            "edges": [
                {
                    "parent": str(Digest(p[1])),
                    "parent_owner": p[0],
                    "child": str(Digest(c[1])),
                    "child_owner": c[0],
                }
                for p, c in self.edges()
            ],
            "children": [{"owner": o, "digest": str(Digest(d))} for o, d in self.children],
        }


def lineage(
    workspace: Workspace, ledger: Ledger, digest: bytes, *, owner: str | None = None
) -> Lineage:
    """The registered ancestors of ``owner``'s registration of ``digest`` (default owner: the
    workspace's own account); raises :class:`NotRegistered` if there is none
    (:class:`RegisteredByOther` when only other accounts registered the digest)."""
    registry = provenance_registry(workspace, ledger)
    root: Ref = (parse_address(owner or workspace.keystore().address, "registrant"), digest)
    nodes: dict[Ref, Registration] = {}
    queue = deque([root])
    while queue:
        current = queue.popleft()
        if current in nodes:
            continue
        record = registry.registration(*current)
        if record is None:
            others = registry.registrants(current[1]) if current == root else []
            if others:
                raise RegisteredByOther(current[1], current[0], others)
            raise NotRegistered(f"{Digest(current[1])} is not registered by {current[0]}")
        nodes[current] = Registration.from_chain(record)
        queue.extend(p for p in record.parents if p not in nodes)
    names: dict[Ref, str] = {}
    for ref, reg in nodes.items():
        name = _statement_name(workspace, reg)
        if name is not None:
            names[ref] = name
    return Lineage(root=root, nodes=nodes, names=names, children=tuple(registry.children(*root)))


def render_tree(graph: Lineage) -> str:
    """The lineage as an indented tree, the artifact first and its parents below it."""
    lines: list[str] = []
    shown: set[Ref] = set()

    def walk(ref: Ref, prefix: str, connector: str) -> None:
        reg = graph.nodes[ref]
        label = f"{reg.kind} {graph.names.get(ref, '?')} {str(Digest(ref[1]))[:23]}…"
        if ref in shown and reg.parents:
            lines.append(f"{prefix}{connector}{label} (parents shown above)")
            return
        shown.add(ref)
        lines.append(f"{prefix}{connector}{label}  block {reg.block_number} by {reg.owner}")
        child_prefix = prefix + {"": "", "└── ": "    "}.get(connector, "│   ")
        for i, parent in enumerate(reg.parents):
            walk(parent, child_prefix, "└── " if i == len(reg.parents) - 1 else "├── ")

    walk(graph.root, "", "")
    if graph.children:
        lines.append(
            "used by: " + ", ".join(f"{str(Digest(c))[:23]}… by {o}" for o, c in graph.children)
        )
    return "\n".join(lines)


def graph_format(path: str | os.PathLike[str]) -> Literal["svg", "png"]:
    """The picture format ``path`` names by its suffix (case-insensitive): ``svg`` or ``png``.

    Raises :class:`InputError` for any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".svg":
        return "svg"
    if suffix == ".png":
        return "png"
    raise InputError(
        f"cannot draw a lineage into {os.fspath(path)!r}: name the file *.svg or *.png"
    )


def write_graph(graph: Lineage, path: str | os.PathLike[str]) -> None:
    """Write a picture of the lineage; the suffix picks the format (``.svg`` or ``.png``)."""
    if graph_format(path) == "png":
        write_png(graph, path)
    else:
        write_svg(graph, path)


@dataclass(frozen=True, kw_only=True)
class _Layout:
    """Where the boxes go: the picture's size and each box's top-left corner, in SVG pixels
    (y grows downwards); every box is ``_BOX_W`` x ``_BOX_H``."""

    width: int
    height: int
    corners: dict[Ref, tuple[int, int]]


def _layout(graph: Lineage) -> _Layout:
    """One column per generation, the root rightmost; a node sits in the column of its longest
    path to the root, so every arrow points right."""
    depth: dict[Ref, int] = {graph.root: 0}
    order = [graph.root]
    for digest in order:
        for parent in graph.nodes[digest].parents:
            if depth.get(parent, -1) < depth[digest] + 1:
                depth[parent] = depth[digest] + 1
                order.append(parent)
    columns = max(depth.values()) + 1
    by_column: dict[int, list[Ref]] = {}
    for digest in graph.nodes:
        by_column.setdefault(depth[digest], []).append(digest)
    rows = max(len(v) for v in by_column.values())
    corners: dict[Ref, tuple[int, int]] = {}
    for col, digests in by_column.items():
        x = _MARGIN + (columns - 1 - col) * (_BOX_W + _GAP_X)
        for row, digest in enumerate(digests):
            corners[digest] = (x, _MARGIN + row * (_BOX_H + _GAP_Y))
    return _Layout(
        width=2 * _MARGIN + columns * _BOX_W + (columns - 1) * _GAP_X,
        height=2 * _MARGIN + rows * _BOX_H + (rows - 1) * _GAP_Y,
        corners=corners,
    )


def _box_style(graph: Lineage, digest: Ref) -> tuple[str, str, str, str]:
    """A node's fill and stroke colours, its title ("kind: name") and its short digest."""
    reg = graph.nodes[digest]
    return (
        _KIND_COLOURS.get(reg.kind, _OTHER_COLOUR),
        _ROOT_STROKE if digest == graph.root else _STROKE,
        f"{reg.kind}: {graph.names.get(digest, '(name unknown)')}",
        f"{str(Digest(digest[1]))[:35]}…",
    )


def write_svg(graph: Lineage, path: str | os.PathLike[str]) -> None:
    """Draw the lineage as SVG: one column per generation, arrows from parent to child."""
    layout = _layout(graph)
    width, height, where = layout.width, layout.height, layout.corners
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>lineage of " + str(Digest(graph.root[1])) + "</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{_ARROW_COLOUR}"/>'
        "</marker></defs>",
    ]
    for parent, child in graph.edges():
        px, py = where[parent]
        cx, cy = where[child]
        parts.append(
            f'<line x1="{px + _BOX_W}" y1="{py + _BOX_H // 2}" x2="{cx}" y2="{cy + _BOX_H // 2}" '
            f'stroke="{_ARROW_COLOUR}" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for digest in graph.nodes:
        x, y = where[digest]
        colour, stroke, title, short = _box_style(graph, digest)
        parts.append(
            f'<g><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
            f'fill="{colour}" stroke="{stroke}"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-weight="bold">{escape(title)}</text>'
            f'<text x="{x + 10}" y="{y + 42}" font-family="monospace" font-size="11">'
            f"{escape(short)}</text></g>"
        )
    parts.append("</svg>\n")
    write_atomic(Path(path), "\n".join(parts).encode(), mode=0o644)


def write_png(graph: Lineage, path: str | os.PathLike[str]) -> None:
    """Draw the lineage as PNG, the same picture as :func:`write_svg`, at twice its pixel size.

    Needs matplotlib (``pip install 'ailedger[graph]'``); raises :class:`InputError` without it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    except ImportError as exc:
        raise InputError("PNG output needs matplotlib: pip install 'ailedger[graph]'") from exc

    layout = _layout(graph)
    # One data unit is one point (1/72 inch), so the SVG's pixel sizes carry over as they are,
    # and the explicit Figure + Agg canvas leaves pyplot's global state alone.
    figure = Figure(figsize=(layout.width / 72, layout.height / 72), dpi=_PNG_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_xlim(0, layout.width)
    axes.set_ylim(layout.height, 0)
    axes.set_axis_off()
    where = layout.corners
    for parent, child in graph.edges():
        px, py = where[parent]
        cx, cy = where[child]
        axes.add_patch(
            FancyArrowPatch(
                (px + _BOX_W, py + _BOX_H / 2),
                (cx, cy + _BOX_H / 2),
                arrowstyle="-|>",
                mutation_scale=10,
                shrinkA=0,
                shrinkB=0,
                color=_ARROW_COLOUR,
                linewidth=1.5,
            )
        )
    for digest in graph.nodes:
        x, y = where[digest]
        colour, stroke, title, short = _box_style(graph, digest)
        axes.add_patch(
            FancyBboxPatch(
                (x, y),
                _BOX_W,
                _BOX_H,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor=colour,
                edgecolor=stroke,
                linewidth=1,
            )
        )
        # parse_math=False: a name with "$" in it is text, not mathtext
        axes.text(
            x + 10,
            y + 22,
            title,
            fontsize=12,
            fontweight="bold",
            family="sans-serif",
            va="baseline",
            parse_math=False,
        )
        axes.text(
            x + 10,
            y + 42,
            short,
            fontsize=11,
            family="monospace",
            va="baseline",
            parse_math=False,
        )
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="png",
        dpi=_PNG_DPI,
        facecolor="white",
        metadata={"Title": "lineage of " + str(Digest(graph.root[1])), "Software": None},
    )
    write_atomic(Path(path), buffer.getvalue(), mode=0o644)


def _statement_name(workspace: Workspace, reg: Registration) -> str | None:
    try:
        envelope = load_statement(workspace, reg)
    except AiledgerError:
        return None
    try:
        statement = parse_json(base64.b64decode(envelope.get("payload", "")), what="statement")
        name = statement["subject"][0]["name"]
    except (AiledgerError, ValueError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
