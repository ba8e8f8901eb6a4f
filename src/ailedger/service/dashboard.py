"""The dashboard: plain server-rendered HTML pages over the log and the service's read views.

Pages (``router``, included by :func:`ailedger.service.app.create_app`):

- ``/`` overview: the log's size, its latest signed checkpoint, its anchors on a timeline
  (inline SVG, x = tree size), the number of recent sentinel alerts;
- ``/entries?start=&limit=`` the log explorer (at most :data:`MAX_PAGE` entries a page) and
  ``/entries/{index}`` one entry as the tree holds it (private fields appear only as their
  salted commitments), with a "verify inclusion" button;
- ``/lineage`` and ``/lineage/{digest}`` registrations and a lineage graph (inline SVG, laid
  out here in layers by longest path from the sources);
- ``/training`` and ``/training/{task}`` tasks, accuracy per round (an SVG line chart),
  contributions and excluded parties;
- ``/alerts`` sentinel alerts with their reasons;
- ``/ui/entries/{index}/raw`` an entry's exact bytes (``application/octet-stream``), and
  ``/ui/static/{name}`` the pages' script, style sheet and icon.

The verification runs in the browser (``static/dashboard.js``, WebCrypto only): it fetches
``/log/checkpoint``, the entry's C2SP tlog-proof (``/v1/entries/{index}/proof``,
https://c2sp.org/tlog-proof) and the raw entry, checks the C2SP signed-note Ed25519 signature
of the checkpoint (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint) against
the log's verifier key, hashes the leaf as RFC 6962 §2.1 does (``SHA-256(0x00 ‖ entry)``) and
recomputes the root from the audit path with the algorithm of RFC 9162 §2.1.3.2, then compares
it with the checkpoint's root.

Security: every value that reaches a page goes through :func:`html.escape`; every page and
static file carries a strict Content-Security-Policy (only this origin; no inline script or
style, so the SVG is styled by presentation attributes and classes); nothing is fetched from
elsewhere. Reads go through the service's access rules (``require(Scope.READ, public=True)``).
The read views (:mod:`ailedger.service.views`) are optional: while a capability has nothing
(or the chain is not reachable) a page shows an empty state, never an error.
"""

import base64
import html
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.errors import AiledgerError, InputError
from ailedger.service.auth import Scope, require
from ailedger.service.background import served_checkpoint
from ailedger.service.context import ServiceContext, context

__all__ = ["CSP", "DEFAULT_PAGE", "MAX_PAGE", "router"]

#: entries shown by ``/entries`` when no ``limit`` is given, and the most it accepts
DEFAULT_PAGE = 25
MAX_PAGE = 100
#: rows read from a view for one page, and nodes drawn in one lineage graph
_MAX_ROWS = 100
_MAX_NODES = 200

#: Content-Security-Policy of every page: this origin only, no inline script or style
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_HASHLIKE = re.compile(r"(?:0x|sha256:)?[0-9a-fA-F]{32,128}", re.ASCII)  # digests, addresses
_TASK = re.compile(r"0|[1-9][0-9]{0,77}", re.ASCII)  # a uint256
_NAV = (
    ("/", "Overview"),
    ("/entries", "Entries"),
    ("/lineage", "Lineage"),
    ("/training", "Training"),
    ("/alerts", "Alerts"),
)


def _service(request: Request) -> ServiceContext:
    """The service's state (:func:`context`, whose string annotations FastAPI cannot read)."""
    return context(request)


Ctx = Annotated[ServiceContext, Depends(_service)]

_pages = APIRouter(dependencies=[Depends(require(Scope.READ, public=True))])
router = APIRouter(include_in_schema=False)


# -- helpers ----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _page(ctx: ServiceContext, title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """A whole HTML page around ``body`` (already escaped HTML), with the security headers."""
    nav = "".join(f'<a href="{href}">{_e(name)}</a>' for href, name in _NAV)
    origin = getattr(ctx.log, "origin", "")
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · ailedger</title>"
        '<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/ui/static/dashboard.css">'
        '<script src="/ui/static/dashboard.js" defer></script></head>'
        f'<body><header><span class="brand">ailedger</span><nav>{nav}</nav>'
        f'<span class="origin">{_e(origin)}</span></header>'
        f"<main><h1>{_e(title)}</h1>{body}</main></body></html>\n"
    )
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


def _error_page(ctx: ServiceContext, status: int, message: str) -> HTMLResponse:
    return _page(ctx, "Error", f'<p class="error" id="error">{_e(message)}</p>', status=status)


def _empty(message: str) -> str:
    return f'<p class="empty">{_e(message)}</p>'


def _parse_number(text: str | None, what: str, *, default: int) -> int:
    """A non-negative decimal from a URL, or :class:`InputError` naming ``what``."""
    if text is None or text == "":
        return default
    if _DECIMAL.fullmatch(text) is None:
        raise InputError(f"{what} must be a non-negative decimal number, got {text[:32]!r}")
    return int(text)


def _view(ctx: ServiceContext, name: str, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Call ``ailedger.service.views.<name>(ctx, ...)``: (its result, why it may be empty),
    or (None, why nothing is shown) when the views are missing or the data cannot be read now
    (the views mark a chain they could not reach with a ``note``).

    :class:`InputError` (bad input from the URL) propagates, for a 400 page, except the views'
    ``NotFound``, which becomes :class:`LookupError` (a 404 page).
    """
    try:
        module = importlib.import_module("ailedger.service.views")
    except ImportError:
        return None, "this service has no read views"
    func = getattr(module, name, None)
    if not callable(func):
        return None, "this service has no read views"
    try:
        found = func(ctx, *args, **kwargs)
    except InputError as exc:
        not_found = getattr(module, "NotFound", None)
        if isinstance(not_found, type) and isinstance(exc, not_found):
            raise LookupError(str(exc)) from exc
        raise
    except AiledgerError as exc:
        return None, f"not available now: {str(exc).splitlines()[0] if str(exc) else exc}"
    note = found.get("note") if isinstance(found, Mapping) else getattr(found, "note", None)
    return found, (f"not available now: {note}" if isinstance(note, str) and note else None)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(value: Any) -> str:
    """One table cell's HTML for any JSON-ready value."""
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _e(_number(value))
    if isinstance(value, str):
        if _HASHLIKE.fullmatch(value):
            return f'<code class="hash">{_e(value)}</code>'
        if len(value) > 80:
            return f'<span title="{_e(value[:1000])}">{_e(_short(value))}</span>'
        return _e(value)
    if isinstance(value, Sequence) and all(isinstance(v, str | int | float) for v in value):
        if not value:
            return '<span class="none">none</span>'
        items = "".join(f"<li>{_e(_short(str(v), 200))}</li>" for v in list(value)[:50])
        return f'<ul class="plain">{items}</ul>'
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return f"<code>{_e(_short(text, 200))}</code>"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _table(
    rows: Iterable[Mapping[str, Any]],
    *,
    table_id: str,
    links: Mapping[str, Callable[[Any], str | None]] | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """An HTML table of ``rows`` (dicts); columns: ``columns`` or the union of the keys, in
    order of first appearance; ``links`` maps a column to a function giving a cell's URL."""
    rows = [row for row in rows if isinstance(row, Mapping)][:_MAX_ROWS]
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            for key in row:
                seen.setdefault(str(key), None)
        columns = list(seen)[:12]
    links = links or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            html_cell = _cell(value)
            url = links[column](value) if column in links and value is not None else None
            if url is not None:
                html_cell = f'<a href="{_e(url)}">{html_cell}</a>'
            cells.append(f"<td>{html_cell}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _utc(seconds: Any) -> Any:
    """A Unix time in seconds as an ISO 8601 UTC string; anything else as it is."""
    if isinstance(seconds, int) and not isinstance(seconds, bool) and 0 <= seconds < 2**40:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return seconds


def _checkpoint_of(note: bytes) -> Checkpoint | None:
    try:
        return Checkpoint.parse(note.decode("utf-8").split("\n\n", 1)[0] + "\n")
    except (AiledgerError, UnicodeDecodeError):
        return None


def _record(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _is_commitment(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"commitment"}


def _leaf_hex(data: bytes) -> str:
    from ailedger.auditlog import _merkle

    return _merkle.leaf_hash(data).hex()


# -- static files -----------------------------------------------------------------------------


@router.get("/ui/static/{name}")
def static_file(name: str) -> Response:
    """The dashboard's script or style sheet (only the files it ships)."""
    kind = _STATIC.get(name)
    if kind is None:
        return JSONResponse({"error": f"no static file {name[:64]!r}"}, status_code=404)
    data = (resources.files("ailedger.service") / "static" / name).read_bytes()
    headers = dict(_HEADERS, **{"Cache-Control": "no-cache"})
    return Response(data, media_type=kind, headers=headers)


# -- the log ----------------------------------------------------------------------------------


@_pages.get("/")
def overview(ctx: Ctx) -> HTMLResponse:
    """The log at a glance: size, latest checkpoint, anchors on a timeline, alerts."""
    size = ctx.log.size
    served = served_checkpoint(ctx)
    checkpoint = _checkpoint_of(served[1]) if served is not None else None
    parts = [
        '<section class="cards">',
        f'<div class="card"><h2>Entries</h2><p class="big" id="log-size">{size}</p>'
        f'<p><a href="/entries">explore</a></p></div>',
    ]
    if checkpoint is None:
        parts.append('<div class="card"><h2>Checkpoint</h2>' + _empty("none signed yet") + "</div>")
    else:
        parts.append(
            '<div class="card" id="checkpoint"><h2>Latest checkpoint</h2>'
            f'<p class="big" id="checkpoint-size">{checkpoint.size}</p>'
            f'<p>root <code id="checkpoint-root">{_e(checkpoint.root_hash.hex())}</code></p>'
            f"<p>log <code>{_e(checkpoint.origin)}</code></p>"
            "</div>"
        )
    alerts, why = _view(ctx, "alerts", limit=_MAX_ROWS)
    count = len(alerts) if isinstance(alerts, list) else 0
    total = getattr(alerts, "total", None)
    count = total if isinstance(total, int) else count
    parts.append(
        f'<div class="card"><h2>Recent alerts</h2><p class="big" id="alert-count">{count}</p>'
        f'<p><a href="/alerts">{"see why" if count else _e(why or "none")}</a></p></div>'
    )
    parts.append("</section>")
    rows = ctx.log.anchor_rows()
    parts.append("<h2>Anchors on chain</h2>")
    if not rows:
        parts.append(_empty("no anchor yet: the log's checkpoints are not on a chain"))
    else:
        parts.append(_anchor_timeline(rows, size))
        parts.append(
            _table(
                [
                    {
                        "size": r[1],
                        "status": r[8],
                        "block": r[6],
                        "tx": r[5],
                        "chain": r[3],
                        "root": bytes(r[2]).hex() if isinstance(r[2], bytes) else r[2],
                    }
                    for r in reversed(rows[-_MAX_ROWS:])
                ],
                table_id="anchors",
            )
        )
    return _page(ctx, "Audit log", "".join(parts))


def _anchor_timeline(rows: Sequence[tuple[Any, ...]], size: int) -> str:
    """Anchors as dots on a line of tree sizes (SVG), coloured by status."""
    width, height, pad = 760, 90, 30
    top = max([size, *(int(r[1]) for r in rows)]) or 1

    def x(n: int) -> float:
        return pad + (width - 2 * pad) * n / top

    marks = [
        f'<line x1="{pad}" y1="45" x2="{width - pad}" y2="45" class="axis"/>',
        f'<text x="{pad}" y="80" class="tick">0</text>',
        f'<text x="{width - pad}" y="80" class="tick" text-anchor="end">{top}</text>',
    ]
    for r in rows[-_MAX_ROWS:]:
        status = str(r[8])
        label = f"size {r[1]}: {status}" + (f", block {r[6]}" if r[6] is not None else "")
        marks.append(
            f'<circle cx="{x(int(r[1])):.1f}" cy="45" r="7" class="anchor {_e(status)}">'
            f"<title>{_e(label)}</title></circle>"
        )
        if len(rows) <= 12:
            marks.append(
                f'<text x="{x(int(r[1])):.1f}" y="28" class="tick" text-anchor="middle">'
                f"{_e(r[1])}: {_e(status)}</text>"
            )
    return (
        f'<svg id="anchor-timeline" class="timeline" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="anchors by tree size">'
        f"{''.join(marks)}</svg>"
    )


@_pages.get("/entries")
def entries_page(ctx: Ctx, start: str | None = None, limit: str | None = None) -> HTMLResponse:
    """A page of entries: ``limit`` (1..100) of them from ``start`` (default: the newest)."""
    size = ctx.log.size
    try:
        count = _parse_number(limit, "limit", default=DEFAULT_PAGE)
        if not 1 <= count <= MAX_PAGE:
            raise InputError(f"limit must be between 1 and {MAX_PAGE}, got {count}")
        first = _parse_number(start, "start", default=max(0, size - count))
        if first > size:
            raise InputError(f"start {first} is past the end of the log (size {size})")
    except InputError as exc:
        return _error_page(ctx, 400, str(exc))
    rows = []
    for index, data in ctx.log.entries(first, first + count):
        record = _record(data) or {}
        kind = record.get("type")
        fields = ", ".join(
            f"{name}*" if _is_commitment(value) else name for name, value in record.items()
        )
        rows.append(
            f'<tr><td><a href="/entries/{index}">{index}</a></td>'
            f"<td><code>{_e(_leaf_hex(data)[:16])}…</code></td>"
            f"<td>{_cell(kind if isinstance(kind, str) else None)}</td>"
            f"<td>{_e(_short(fields, 100))}</td><td>{len(data)}</td></tr>"
        )
    pager = []
    if first > 0:
        back = max(0, first - count)
        pager.append(f'<a id="prev" href="/entries?start={back}&amp;limit={count}">previous</a>')
    if first + count < size:
        pager.append(
            f'<a id="next" href="/entries?start={first + count}&amp;limit={count}">next</a>'
        )
    shown = f"entries {first} to {first + len(rows) - 1} of {size}" if rows else f"none of {size}"
    body = (
        f'<p class="note">{_e(shown)}; * marks a private field, kept as a commitment</p>'
        + (
            '<table id="entries"><thead><tr><th>#</th><th>leaf hash</th><th>type</th>'
            f"<th>fields</th><th>bytes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else _empty("the log is empty" if size == 0 else "no entries on this page")
        )
        + f'<p class="pager">{" ".join(pager)}</p>'
    )
    return _page(ctx, "Entries", body)


def _entry_index(ctx: ServiceContext, text: str) -> int:
    index = _parse_number(text, "the entry index", default=0)
    size = ctx.log.size
    if index >= size:
        raise LookupError(f"the log has no entry {index} (size {size})")
    return index


@_pages.get("/entries/{index}")
def entry_page(ctx: Ctx, index: str) -> HTMLResponse:
    """One entry as the tree holds it, and the in-browser inclusion check."""
    try:
        at = _entry_index(ctx, index)
    except InputError as exc:
        return _error_page(ctx, 400, str(exc))
    except LookupError as exc:
        return _error_page(ctx, 404, str(exc.args[0]))
    data = ctx.log.entry_data(at)
    record = _record(data)
    fields = []
    for name, value in (record or {}).items():
        if _is_commitment(value):
            shown = (
                f'<span class="private">private, committed as '
                f"<code>{_e(value['commitment'])}</code></span>"
            )
        else:
            shown = _cell(value)
        fields.append(f"<tr><th>{_e(name)}</th><td>{shown}</td></tr>")
    try:
        vkey = ctx.log.verifier_key(ctx.workspace.public_key())
    except (AiledgerError, OSError, ValueError):
        vkey = ""
    pretty = (
        json.dumps(record, indent=2, ensure_ascii=False)
        if record is not None
        else base64.b64encode(data).decode()
    )
    body = (
        f'<dl class="facts"><dt>index</dt><dd id="entry-index">{at}</dd>'
        f"<dt>bytes</dt><dd>{len(data)}</dd>"
        f'<dt>leaf hash</dt><dd><code id="leaf-hash">{_e(_leaf_hex(data))}</code></dd></dl>'
        f'<table id="fields"><tbody>{"".join(fields)}</tbody></table>'
        f"<details><summary>entry bytes (RFC 8785 JSON)</summary><pre>{_e(pretty)}</pre></details>"
        f'<section id="verify-panel" data-index="{at}" data-origin="{_e(ctx.log.origin)}" '
        f'data-vkey="{_e(vkey)}" data-checkpoint-url="/log/checkpoint" '
        f'data-proof-url="/v1/entries/{at}/proof" data-raw-url="/ui/entries/{at}/raw">'
        "<h2>Inclusion</h2><p>Your browser fetches the log's signed checkpoint, this entry's "
        "proof and its bytes, and checks them itself (WebCrypto).</p>"
        f'<p>log key <code id="vkey">{_e(vkey or "unknown")}</code></p>'
        '<button type="button" id="verify">Verify inclusion</button>'
        '<p id="verify-result" class="result" role="status"></p>'
        '<ol id="verify-steps"></ol></section>'
    )
    nav = '<p class="pager">'
    if at > 0:
        nav += f'<a href="/entries/{at - 1}">previous</a> '
    if at + 1 < ctx.log.size:
        nav += f'<a href="/entries/{at + 1}">next</a>'
    return _page(ctx, f"Entry {at}", body + nav + "</p>")


@_pages.get("/ui/entries/{index}/raw")
def entry_raw(ctx: Ctx, index: str) -> Response:
    """The exact bytes of entry ``index``, as the log hashes them."""
    try:
        at = _entry_index(ctx, index)
    except InputError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except LookupError as exc:
        return JSONResponse({"error": str(exc.args[0])}, status_code=404)
    return Response(
        ctx.log.entry_data(at),
        media_type="application/octet-stream",
        headers=dict(_HEADERS, **{"Cache-Control": "max-age=31536000, immutable"}),
    )


# -- lineage ----------------------------------------------------------------------------------


def _lineage_link(value: Any) -> str | None:
    return f"/lineage/{value}" if isinstance(value, str) and value.startswith("sha256:") else None


def _entry_link(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"/entries/{value}"
    return None


@_pages.get("/lineage")
def registrations_page(ctx: Ctx) -> HTMLResponse:
    """Registered datasets and models (newest first), each linking to its lineage."""
    found, why = _view(ctx, "registrations", limit=_MAX_ROWS)
    if not found:
        return _page(ctx, "Provenance", _empty(why or "nothing is registered yet"))
    columns = ("name", "kind", "digest", "owner", "parents", "block_number", "tx_hash")
    rows = [
        {**r, "parents": [p.get("digest") for p in r.get("parents") or [] if isinstance(p, dict)]}
        for r in found
        if isinstance(r, Mapping)
    ]
    table = _table(rows, table_id="registrations", columns=columns, links={"digest": _lineage_link})
    return _page(ctx, "Provenance", table)


@_pages.get("/lineage/{digest}")
def lineage_page(ctx: Ctx, digest: str) -> HTMLResponse:
    """A registration and its registered ancestors: a graph with inputs on the left and what
    was made from them on the right."""
    try:
        graph, why = _view(ctx, "lineage", digest)
    except InputError as exc:
        return _error_page(ctx, 400, str(exc))
    except LookupError as exc:
        return _error_page(ctx, 404, str(exc.args[0]))
    nodes = graph.get("nodes") if isinstance(graph, Mapping) else None
    edges = graph.get("edges") if isinstance(graph, Mapping) else None
    if not nodes:
        return _page(ctx, "Lineage", _empty(why or f"no lineage recorded for {digest}"))
    focus = (str(graph.get("root_owner") or ""), str(graph.get("root") or digest))
    svg = _lineage_svg(list(nodes), list(edges or []), focus)
    children = graph.get("children") or []
    rows = [{**n, "registered": _utc(n.get("timestamp"))} for n in nodes if isinstance(n, Mapping)]
    table = _table(
        rows,
        table_id="lineage-nodes",
        columns=("name", "kind", "digest", "owner", "block_number", "registered"),
        links={"digest": _lineage_link},
    )
    made = (
        "<h2>Registered from it</h2>"
        + _table(children, table_id="lineage-children", links={"digest": _lineage_link})
        if children
        else ""
    )
    return _page(ctx, "Lineage", svg + table + made)


_Ref = tuple[str, str]


def _layers(ids: Sequence[_Ref], edges: Sequence[tuple[_Ref, _Ref]]) -> dict[_Ref, int]:
    """Each node's column: the longest path to it from a source (Kahn's topological order;
    nodes on a cycle go after the rest)."""
    incoming = dict.fromkeys(ids, 0)
    outgoing: dict[_Ref, list[_Ref]] = {i: [] for i in ids}
    for a, b in edges:
        outgoing[a].append(b)
        incoming[b] += 1
    layer = dict.fromkeys(ids, 0)
    ready = [i for i in ids if incoming[i] == 0]
    done = set()
    while ready:
        node = ready.pop()
        done.add(node)
        for nxt in outgoing[node]:
            layer[nxt] = max(layer[nxt], layer[node] + 1)
            incoming[nxt] -= 1
            if incoming[nxt] == 0:
                ready.append(nxt)
    last = max(layer.values(), default=0) + 1
    for node in ids:
        if node not in done:
            layer[node] = last
    return layer


def _lineage_svg(nodes: list[Any], raw_edges: list[Any], focus: _Ref) -> str:
    """The graph as SVG: registrations (owner, digest) as boxes in columns by layer, arrows
    from parent to child; ``focus`` is highlighted."""
    kept = [n for n in nodes if isinstance(n, Mapping)][:_MAX_NODES]
    by_id: dict[_Ref, Mapping[str, Any]] = {
        (str(n.get("owner", "")), str(n.get("digest", ""))): n for n in kept
    }
    ids = list(by_id)
    edges = []
    for e in raw_edges:
        if not isinstance(e, Mapping):
            continue
        a = (str(e.get("parent_owner", "")), str(e.get("parent", "")))
        b = (str(e.get("child_owner", "")), str(e.get("child", "")))
        if a in by_id and b in by_id and a != b:
            edges.append((a, b))
    layer = _layers(ids, edges)
    rows: dict[int, int] = {}
    place: dict[_Ref, tuple[int, int]] = {}
    for node in ids:
        column = layer[node]
        place[node] = (column, rows.get(column, 0))
        rows[column] = rows.get(column, 0) + 1
    box_w, box_h, gap_x, gap_y, pad = 220, 50, 70, 22, 12
    width = pad * 2 + (max(layer.values()) + 1) * (box_w + gap_x) - gap_x
    height = pad * 2 + max(rows.values()) * (box_h + gap_y) - gap_y

    def corner(node: _Ref) -> tuple[int, int]:
        column, row = place[node]
        return pad + column * (box_w + gap_x), pad + row * (box_h + gap_y)

    parts = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
    ]
    for a, b in edges:
        ax, ay = corner(a)
        bx, by = corner(b)
        parts.append(
            f'<line x1="{ax + box_w}" y1="{ay + box_h // 2}" x2="{bx}" y2="{by + box_h // 2}" '
            'class="edge" stroke="#555" marker-end="url(#arrow)"/>'
        )
    for node in ids:
        x, y = corner(node)
        info = by_id[node]
        owner, digest = node
        name = info.get("name")
        title = _short(str(name) if name else digest, 30)
        kind = _short(str(info.get("kind") or ""), 10)
        classes = "node focus" if node == focus else "node"
        link = _lineage_link(digest) or "/lineage"
        parts.append(
            f'<a href="{_e(link)}"><g class="{classes}"><title>{_e(digest)} by {_e(owner)}</title>'
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6"/>'
            f'<text x="{x + 8}" y="{y + 20}" class="label">{_e(title)}</text>'
            f'<text x="{x + 8}" y="{y + 39}" class="sub">{_e(kind)} '
            f"{_e(digest.removeprefix('sha256:')[:16])}…</text></g></a>"
        )
    return (
        f'<svg id="lineage-graph" class="graph" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="lineage graph">{"".join(parts)}</svg>'
    )


# -- training ---------------------------------------------------------------------------------


def _task_link(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"/training/{value}"
    return None


@_pages.get("/training")
def training_page(ctx: Ctx) -> HTMLResponse:
    """Federated training tasks, newest first."""
    found, why = _view(ctx, "training_tasks")
    if not found:
        return _page(ctx, "Training", _empty(why or "no training task yet"))
    columns = ("task", "phase", "round", "rounds", "quorum", "rule", "participants", "active")
    return _page(
        ctx,
        "Training",
        _table(found, table_id="tasks", columns=columns, links={"task": _task_link}),
    )


@_pages.get("/training/{task}")
def training_task_page(ctx: Ctx, task: str) -> HTMLResponse:
    """A task's rounds: accuracy per round (chart), contributions, excluded parties."""
    try:
        if _TASK.fullmatch(task) is None:
            raise InputError(
                f"the task id must be a non-negative decimal number, got {task[:32]!r}"
            )
        found, why = _view(ctx, "training_rounds", int(task))
    except InputError as exc:
        return _error_page(ctx, 400, str(exc))
    except LookupError as exc:
        return _error_page(ctx, 404, str(exc.args[0]))
    title = f"Training task {task}"
    rounds = [r for r in found or [] if isinstance(r, Mapping)]
    if not rounds:
        return _page(ctx, title, _empty(why or "no round recorded for this task"))
    return _page(ctx, title, _rounds_body(rounds))


def _rounds_body(rounds: Sequence[Mapping[str, Any]]) -> str:
    """The chart and tables of a task's rounds (dicts as ``views.training_rounds`` gives)."""
    points = []
    for position, r in enumerate(rounds):
        accuracy = r.get("accuracy")
        if (
            isinstance(accuracy, int | float)
            and not isinstance(accuracy, bool)
            and math.isfinite(accuracy)
        ):
            points.append((r.get("round", position), float(accuracy)))
    parts = ["<h2>Accuracy per round</h2>"]
    parts.append(_line_chart(points) if points else _empty("no accuracy reported for this task"))
    parts.append("<h2>Rounds</h2>")
    parts.append(
        _table(
            rounds,
            table_id="rounds",
            columns=("round", "status", "accuracy", "votes", "revealed", "excluded", "rejected"),
        )
    )
    parts.append("<h2>Contributions</h2>")
    contributions = []
    for position, r in enumerate(rounds):
        scores = r.get("scores")
        if isinstance(scores, Mapping):
            for party, score in scores.items():
                contributions.append(
                    {"round": r.get("round", position), "party": party, "score": score}
                )
    parts.append(
        _table(contributions, table_id="contributions")
        if contributions
        else _empty("no contribution scores reported")
    )
    return "".join(parts)


def _line_chart(points: Sequence[tuple[Any, float]]) -> str:
    """An SVG line chart of (round label, value) in order; y from 0 to 1 unless a value is
    outside, then from the smallest to the largest value."""
    width, height, left, right, top, bottom = 640, 260, 50, 20, 20, 40
    values = [v for _, v in points]
    low, high = (0.0, 1.0) if min(values) >= 0 and max(values) <= 1 else (min(values), max(values))
    if high == low:
        high = low + 1

    def x(i: int) -> float:
        span = max(1, len(points) - 1)
        return left + (width - left - right) * i / span

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - low) / (high - low))

    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" class="axis"/>',
        f'<text x="{left - 6}" y="{y(high) + 4:.1f}" class="tick" text-anchor="end">'
        f"{_e(_number(high))}</text>",
        f'<text x="{left - 6}" y="{y(low) + 4:.1f}" class="tick" text-anchor="end">'
        f"{_e(_number(low))}</text>",
    ]
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    parts.append(f'<polyline points="{line}" class="series" fill="none"/>')
    for i, (label, v) in enumerate(points):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="4" class="point">'
            f"<title>round {_e(label)}: {_e(_number(v))}</title></circle>"
            f'<text x="{x(i):.1f}" y="{height - bottom + 18}" class="tick" '
            f'text-anchor="middle">{_e(label)}</text>'
        )
    return (
        f'<svg id="accuracy-chart" class="chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="accuracy per round">{"".join(parts)}</svg>'
    )


# -- alerts -----------------------------------------------------------------------------------


def _reasons(value: Any) -> str:
    """A detector's reasons (``[{"feature", "value", "why"}]`` or strings) as a list."""
    if not isinstance(value, list) or not value:
        return _cell(value)
    items = []
    for reason in value[:20]:
        if isinstance(reason, Mapping):
            feature, amount, why = reason.get("feature"), reason.get("value"), reason.get("why")
            text = f"{feature} = {_cell(amount)}" if feature is not None else ""
            text += f": {_e(why)}" if why is not None else ""
            items.append(f"<li>{text or _cell(dict(reason))}</li>")
        else:
            items.append(f"<li>{_cell(reason)}</li>")
    return f'<ul class="plain reasons">{"".join(items)}</ul>'


@_pages.get("/alerts")
def alerts_page(ctx: Ctx) -> HTMLResponse:
    """Sentinel alerts recorded in the log, newest first, with their reasons."""
    found, why = _view(ctx, "alerts", limit=_MAX_ROWS)
    if not found:
        return _page(ctx, "Alerts", _empty(why or "no alert: the sentinel recorded nothing"))
    head = "".join(
        f"<th>{name}</th>"
        for name in ("entry", "transaction", "block", "class", "detector", "score", "reasons")
    )
    rows = []
    for alert in found:
        if not isinstance(alert, Mapping):
            continue
        link = _entry_link(alert.get("index"))
        entry = f'<a href="{_e(link)}">{_cell(alert.get("index"))}</a>' if link else "—"
        retracted = alert.get("retracted")
        note = f'<p class="note">retracted: {_e(retracted)}</p>' if retracted else ""
        rows.append(
            f"<tr><td>{entry}</td><td><code>{_cell(alert.get('tx'))}</code></td>"
            f"<td>{_cell(alert.get('block'))}</td><td>{_cell(alert.get('class'))}</td>"
            f"<td>{_cell(alert.get('detector'))}</td><td>{_cell(alert.get('score'))}</td>"
            f"<td>{_reasons(alert.get('reasons'))}{note}</td></tr>"
        )
    table = (
        f'<table id="alerts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return _page(ctx, "Alerts", table)


router.include_router(_pages)
