"""``ailedger provenance``, ``ailedger share`` and ``ailedger keys``: provenance and sharing."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from ailedger.cli._common import JsonOpt, RpcOpt, WorkspaceOpt, emit, err_console, progress
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import AiledgerError, InputError
from ailedger.provenance.digest import Digest

if TYPE_CHECKING:
    from ailedger.ledger import Ledger, Receipt
    from ailedger.provenance.dsse import TrustedKey
    from ailedger.provenance.registry import Verification
    from ailedger.workspace import Workspace

__all__ = ["keys_app", "provenance_app", "share_app"]

provenance_app = typer.Typer(
    help="Register datasets and models on chain, verify them, show their lineage.",
    no_args_is_help=True,
)
share_app = typer.Typer(
    help="Share registered data with the parties granted on chain.", no_args_is_help=True
)
keys_app = typer.Typer(help="The workspace's public keys, to hand to others.", no_args_is_help=True)

DigestArg = Annotated[
    str, typer.Argument(help="A registered digest: sha256:<64 hex> (0x<64 hex> accepted).")
]
ResourceOpt = Annotated[
    str, typer.Option("--resource", "-r", help="The registered digest the file is shared under.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where to write the result.")]
KeyArg = Annotated[
    str,
    typer.Argument(help="The recipient's X25519 public key: a PEM file, or 64 hex digits."),
]
RegistrantOpt = Annotated[
    str | None,
    typer.Option(
        "--registrant",
        help="The account (0x address) whose registration of the digest is meant; "
        "default: this workspace's own account.",
    ),
]


@provenance_app.command()
def register(
    path: Annotated[Path, typer.Argument(help="The file or folder to register.")],
    kind: Annotated[
        str, typer.Option(help="What it is.", click_type=click.Choice(["dataset", "model"]))
    ],
    parent: Annotated[
        list[str] | None,
        typer.Option(
            "--parent",
            help="A registered parent (repeatable): DIGEST for one this workspace's account "
            "registered, ADDRESS:DIGEST for one the account ADDRESS registered "
            "(another organisation's).",
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Glob of files to leave out (repeatable).")
    ] = None,
    allow_symlinks: Annotated[
        bool, typer.Option(help="Follow symbolic links that stay inside the folder.")
    ] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hash PATH, sign its manifest and register it on chain under this workspace's account,
    with its parents; write the evidence beside it as PATH.ailedger.json."""
    from ailedger.provenance.registry import parse_parent, register_artifact
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    own = ws.keystore().address
    parents = [parse_parent(p, own, "--parent") for p in parent or []]
    secret = passphrase_source()
    with ws.ledger(rpc=rpc, passphrase=secret) as ledger:
        reg = register_artifact(
            ws,
            ledger,
            path,
            kind=kind,
            signing_key=ws.signing_key(secret),
            parents=parents,
            ignore=ignore or [],
            allow_symlinks=allow_symlinks,
            write_bundle=True,
        )
    doc = reg.to_json()
    emit(
        as_json,
        doc,
        f"registered {reg.kind} {doc['digest']}\nblock {reg.block_number}, "
        f"{doc.get('gas_used')} gas, parents: {len(reg.parents)}\n"
        f"bundle {doc['bundle']} (ship it with the artifact)",
    )


@provenance_app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="The file or folder to check.")],
    digest: Annotated[
        str | None, typer.Option(help="The digest PATH should have (default: by its name).")
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(help="Another trusted Ed25519 or P-256 public key, PEM (repeatable)."),
    ] = None,
    registrant: RegistrantOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="The bundle of PATH (default: PATH.ailedger.json beside it, if present); with "
            "one, only --rpc (or a workspace's chain) and --trust are needed."
        ),
    ] = None,
    statement: Annotated[
        list[Path] | None,
        typer.Option(
            "--statement",
            help="A signed statement to add to this workspace's blobs first, as `provenance "
            "statement` prints it in the registrant's workspace (repeatable).",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check PATH against its registration by a trusted registrant and a trusted signature
    (exit 1 if it differs).

    Only the registration made by --registrant (default: the bundle's, else this workspace's
    account) counts; its signed statement must name that account and be signed by a trusted
    key. With a bundle, no workspace is needed: --rpc URL --trust KEY.pem suffice.
    """
    from ailedger.ledger.provenance import parse_address
    from ailedger.provenance.bundle import bundle_path
    from ailedger.provenance.registry import import_statement, parse_digest, verify_artifact

    expected = parse_digest(digest, "--digest") if digest else None
    owner = parse_address(registrant, "--registrant") if registrant else None
    statements = [_read_statement(p) for p in statement or []]
    trusted = [_trusted_key(p) for p in trust or []]
    evidence = bundle if bundle is not None else bundle_path(path)
    if bundle is not None or (
        evidence.is_file() and not statements and _bundle_fits(evidence, owner)
    ):
        result = _verify_bundled(path, evidence, trusted, expected, owner, workspace, rpc)
    else:
        from ailedger.workspace import Workspace

        ws = Workspace.open(workspace_path(workspace))
        keys = [ws.public_key(), *trusted]
        for data in statements:
            import_statement(ws, data)
        with ws.ledger(rpc=rpc) as ledger:
            result = verify_artifact(
                ws, ledger, path, trusted_keys=keys, expected=expected, registrant=owner
            )
    doc = result.to_json()
    emit(
        as_json,
        doc,
        f"verified {doc['kind']} {doc['name']} {doc['digest']}\n"
        f"registered in block {doc['block_number']} by {doc['owner']}, {doc['files']} file(s)",
    )


def _bundle_fits(evidence: Path, owner: str | None) -> bool:
    """Whether the bundle found beside the artifact is of the asked registrant (any, when
    none is asked); one of another registrant is left for the workspace's statements."""
    from ailedger.provenance.bundle import read_bundle

    return owner is None or read_bundle(evidence).registrant == owner


def _verify_bundled(
    path: Path,
    evidence: Path,
    trusted: list[TrustedKey],
    expected: bytes | None,
    owner: str | None,
    workspace: Path | None,
    rpc: str | None,
) -> Verification:
    """Verify PATH from its bundle: the workspace (if there is one) adds its own key and its
    chain; with --rpc and no workspace, only the trusted keys given count."""
    from ailedger.errors import WorkspaceError
    from ailedger.ledger import Ledger
    from ailedger.provenance.bundle import verify_with_bundle
    from ailedger.workspace import Workspace

    ws: Workspace | None = None
    try:
        ws = Workspace.open(workspace_path(workspace))
    except WorkspaceError:
        if workspace is not None or rpc is None:
            raise
    keys = [*([ws.public_key()] if ws is not None else []), *trusted]
    if not keys:
        raise InputError("give the registrant's public key to trust: --trust KEY.pem")
    ledger = ws.ledger(rpc=rpc) if ws is not None else Ledger.connect(str(rpc))
    with ledger:
        return verify_with_bundle(
            path,
            ledger,
            trusted_keys=keys,
            bundle=evidence,
            registrant=owner,
            registry=_consortium_registry(ws, ledger.chain_id),
            expected=expected,
        )


def _consortium_registry(ws: Workspace | None, chain_id: int) -> str | None:
    """The ProvenanceRegistry a workspace that created or joined a consortium trusts on
    ``chain_id`` (a bundle naming another registry is then refused); None otherwise, when any
    registry holding ProvenanceRegistry's code is accepted."""
    from ailedger.consortium import WORKSPACE_FILE, workspace_consortium

    if ws is None or not (ws.path / WORKSPACE_FILE).is_file():
        return None
    consortium = workspace_consortium(ws)
    if consortium.chain_id != chain_id:
        return None
    return consortium.contracts.get("ProvenanceRegistry")


@provenance_app.command(name="lineage")
def lineage_cmd(
    digest: DigestArg,
    graph: Annotated[
        Path | None,
        typer.Option(help="Also draw the lineage into this .svg or .png file (PNG: matplotlib)."),
    ] = None,
    registrant: RegistrantOpt = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what DIGEST was made from: a tree of its registered ancestors, across accounts."""
    from ailedger.ledger.provenance import parse_address
    from ailedger.provenance.lineage import graph_format, lineage, render_tree, write_graph
    from ailedger.provenance.registry import parse_digest
    from ailedger.workspace import Workspace

    target = parse_digest(digest)
    owner = parse_address(registrant, "--registrant") if registrant else None
    if graph is not None:
        graph_format(graph)  # a wrong suffix fails before the chain is opened
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc) as ledger:
        found = lineage(ws, ledger, target, owner=owner)
    if graph is not None:
        write_graph(found, graph)
    doc = found.to_json()
    if graph is not None:
        doc["graph"] = str(graph)
    emit(as_json, doc, render_tree(found))


@provenance_app.command()
def statement(
    digest: DigestArg,
    registrant: RegistrantOpt = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = True,
) -> None:
    """Print the signed statement (DSSE envelope) registered for DIGEST: the exact registered
    bytes, whose SHA-256 is the statement digest on chain."""
    from ailedger.ledger.provenance import parse_address
    from ailedger.provenance.registry import load_statement_bytes, lookup, parse_digest
    from ailedger.workspace import Workspace

    target = parse_digest(digest)
    owner = parse_address(registrant, "--registrant") if registrant else None
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc) as ledger:
        reg = lookup(ws, ledger, target, owner=owner)
    if reg is None:
        from ailedger.provenance.registry import NotRegistered

        who = owner or ws.keystore().address
        raise NotRegistered(f"{digest} is not registered by {who}")
    blob = load_statement_bytes(ws, reg)
    sys.stdout.flush()
    sys.stdout.buffer.write(blob)
    sys.stdout.buffer.flush()


@share_app.command()
def grant(
    resource: DigestArg,
    key: KeyArg,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant the X25519 public key KEY access to your registration of RESOURCE."""
    from ailedger.provenance.sharing import grant as grant_access

    _change_grant(grant_access, "granted", resource, key, workspace, rpc, as_json)


@share_app.command()
def revoke(
    resource: DigestArg,
    key: KeyArg,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke KEY's grant on your registration of RESOURCE; files sealed afterwards exclude
    it."""
    from ailedger.provenance.sharing import revoke as revoke_access

    _change_grant(revoke_access, "revoked", resource, key, workspace, rpc, as_json)


@share_app.command()
def grants(
    resource: DigestArg,
    registrant: RegistrantOpt = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every key ever granted a registration of RESOURCE, live or revoked."""
    from ailedger.ledger.provenance import parse_address
    from ailedger.provenance.registry import parse_digest
    from ailedger.provenance.sharing import grants as list_grants
    from ailedger.workspace import Workspace

    target = parse_digest(resource)
    owner = parse_address(registrant, "--registrant") if registrant else None
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc) as ledger:
        found = list_grants(ws, ledger, target, owner=owner)
    doc = {
        "resource": str(Digest(target)),
        "owner": owner or ws.keystore().address,
        "grants": [
            {
                "key": g.recipient.hex(),
                "granted_block": g.granted_block,
                "revoked_block": g.revoked_block,
                "live": g.live,
            }
            for g in found
        ],
    }
    lines = [
        f"{g.recipient.hex()}  {'live' if g.live else 'revoked in block ' + str(g.revoked_block)}"
        for g in found
    ]
    emit(as_json, doc, "\n".join(lines) or "no grants")


StreamArg = Annotated[Path, typer.Argument(help="The file to read, or - for standard input.")]
StreamOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Where to write the result, or - for standard output.")
]


@share_app.command(name="seal")
def seal_cmd(
    path: StreamArg,
    resource: ResourceOpt,
    out: StreamOutOpt,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt PATH for the keys granted RESOURCE now (and for yourself).

    With - as PATH or --out, the data streams through a pipe; the output opens only if the
    input ended normally.
    """
    from ailedger.provenance.registry import parse_digest
    from ailedger.provenance.sharing import seal, seal_stream
    from ailedger.workspace import Workspace

    target = parse_digest(resource, "--resource")
    _check_stdout(out, as_json)
    ws = Workspace.open(workspace_path(workspace))
    secret = passphrase_source()
    with ws.ledger(rpc=rpc) as ledger:
        if _is_std(path) or _is_std(out):
            with _std_streams(path, out) as (src, dst):
                sealed = seal_stream(ws, ledger, src, dst, resource=target, passphrase=secret)
        else:
            sealed = seal(ws, ledger, path, out, resource=target, passphrase=secret)
    doc = {**sealed.to_json(), "path": str(out)}
    _report(
        out,
        as_json,
        doc,
        f"sealed {path} into {out}: version {sealed.version} of {doc['resource']}, "
        f"for {len(sealed.recipients)} key(s)",
    )


@share_app.command(name="open")
def open_cmd(
    path: StreamArg,
    resource: ResourceOpt,
    out: StreamOutOpt,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            "--registrant",
            help="The account (0x address) that registered RESOURCE and seals it; "
            "default: this workspace's own account.",
        ),
    ] = None,
    unsafe_allow_older: Annotated[
        bool,
        typer.Option(
            "--unsafe-allow-older",
            help="Open a version older than one already opened here (a replay is refused "
            "without it).",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decrypt PATH into OUT if it is a version of the owner's RESOURCE signed by the owner,
    not older than one opened here, and the chain grants your key RESOURCE.

    With --out -, plaintext is written as it authenticates: if the input turns out truncated
    or altered, or not signed by the owner, the command exits 1 after writing the bytes
    before; discard them. A file output is renamed into place only once everything checked
    out.
    """
    from ailedger.ledger.provenance import parse_address
    from ailedger.provenance.registry import parse_digest
    from ailedger.provenance.sharing import open_shared, open_stream
    from ailedger.workspace import Workspace

    target = parse_digest(resource, "--resource")
    registrant = parse_address(owner, "--owner") if owner else None
    _check_stdout(out, as_json)
    ws = Workspace.open(workspace_path(workspace))
    secret = passphrase_source()
    options: dict[str, Any] = {
        "resource": target,
        "passphrase": secret,
        "owner": registrant,
        "unsafe_allow_older": unsafe_allow_older,
    }
    with ws.ledger(rpc=rpc) as ledger:
        if _is_std(path) or _is_std(out):
            with _std_streams(path, out) as (src, dst):
                opened = open_stream(ws, ledger, src, dst, **options)
        else:
            opened = open_shared(ws, ledger, path, out, **options)
    doc = {**opened.to_json(), "path": str(out)}
    older = " (OLDER than a version opened before)" if opened.older else ""
    _report(
        out,
        as_json,
        doc,
        f"opened version {opened.version}{older} of {opened.owner}'s {doc['resource']}, "
        f"sealed by {opened.sender}, into {out}",
    )
    if opened.first:
        err_console.print(
            f"warning: the first version of {doc['resource']} opened here: nothing in this "
            "workspace shows whether a newer version exists, so a replay of an older one "
            "cannot be ruled out; ask the owner for the latest version number"
        )


def _is_std(path: Path) -> bool:
    return str(path) == "-"


def _report(out: Path, as_json: bool, doc: dict[str, Any], text: str) -> None:
    """The command's result on stdout, unless stdout carries the data (``--out -``): then
    the text goes to stderr, after the data."""
    if _is_std(out):
        progress(text)
    else:
        emit(as_json, doc, text)


def _check_stdout(out: Path, as_json: bool) -> None:
    if _is_std(out) and as_json:
        raise InputError("--json and --out - would both write to standard output; pick one")


@contextmanager
def _std_streams(path: Path, out: Path) -> Iterator[tuple[io.BufferedIOBase, io.BufferedIOBase]]:
    """Standard input or the file ``path``; standard output or a new file ``out``.

    A file output is written beside ``out`` (unnamed until then where the OS allows, never
    through a planted link) and renamed into place only if the body ends without error, as for
    the file commands.
    """
    from ailedger.crypto import envelope

    with ExitStack() as stack:
        if _is_std(path):
            src: io.BufferedIOBase = stack.enter_context(
                open(sys.stdin.fileno(), "rb", closefd=False)
            )
        else:
            try:
                src = stack.enter_context(open(path, "rb"))
            except OSError as exc:
                raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
        if _is_std(out):
            sys.stdout.flush()
            yield src, stack.enter_context(open(sys.stdout.fileno(), "wb", closefd=False))
            return
        yield src, stack.enter_context(envelope.output_file(out))


@keys_app.command()
def show(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Print the account, the Ed25519 signing key and the X25519 sharing key (public parts)."""
    from cryptography.hazmat.primitives import serialization

    from ailedger.crypto import envelope
    from ailedger.provenance.dsse import key_id
    from ailedger.provenance.sharing import sharing_public_key
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    ed = ws.public_key()
    x = sharing_public_key(ws, passphrase_source())
    doc: dict[str, Any] = {
        "account": ws.keystore().address,
        "ed25519": {
            "keyid": key_id(ed),
            "pem": ed.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
        },
        "x25519": {
            "hex": envelope.dump_public_key(x, encoding="raw").hex(),
            "keyid": envelope.key_id(x),
            "pem": envelope.dump_public_key(x).decode(),
        },
    }
    emit(
        as_json,
        doc,
        f"account  {doc['account']}\n"
        f"ed25519  keyid {doc['ed25519']['keyid']} (signs statements)\n"
        f"x25519   {doc['x25519']['hex']} (give this to be granted data)",
    )


def _trusted_key(path: Path) -> TrustedKey:
    from ailedger.crypto.keys import load_verification_key

    try:
        return load_verification_key(path)
    except AiledgerError as exc:
        raise InputError(str(exc)) from exc


def _read_statement(path: Path) -> bytes:
    """The bytes of a signed statement file, refused when absurdly large."""
    from ailedger._input import read_bounded

    try:
        with path.open("rb") as fh:
            return read_bounded(fh, limit=64 * 1024 * 1024, what=f"--statement {str(path)!r}")
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from exc


def _recipient_key(text: str) -> bytes | str:
    candidate = Path(text)
    if candidate.is_file():
        return candidate.read_bytes()
    return text


def _change_grant(
    action: Callable[[Workspace, Ledger, bytes, Any], Receipt],
    verb: str,
    resource: str,
    key: str,
    workspace: Path | None,
    rpc: str | None,
    as_json: bool,
) -> None:
    from ailedger.crypto import envelope
    from ailedger.provenance.registry import parse_digest
    from ailedger.provenance.sharing import read_public_key
    from ailedger.workspace import Workspace

    target = parse_digest(resource)
    recipient = read_public_key(_recipient_key(key))
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc, passphrase=passphrase_source()) as ledger:
        receipt = action(ws, ledger, target, recipient)
    doc = {
        "resource": str(Digest(target)),
        "key": envelope.dump_public_key(recipient, encoding="raw").hex(),
        "tx_hash": receipt.tx_hash,
        "block_number": receipt.block_number,
        "gas_used": receipt.gas_used,
    }
    emit(as_json, doc, f"{verb} {doc['key']} on {doc['resource']} in block {receipt.block_number}")
