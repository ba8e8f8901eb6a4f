"""``ailedger serve``: the workspace's audit log as an HTTP service (FastAPI on uvicorn).

One process holds the log's write lock for as long as it runs, and writes who it is (pid and
URL) into the lock file, so another command that would write the log says so in one line
instead of waiting. The signing key is unlocked once, at start. Loopback only unless
``--unsafe-non-loopback`` is given. uvicorn runs on uvloop with the httptools parser when they
are installed (the ``service`` extra), without proxy-header rewriting or a Server header.

Each connection's writes are coalesced (:func:`_coalescing`): uvicorn writes a response's head
and its body separately, two system calls and two TCP segments on a socket with ``TCP_NODELAY``;
buffered until the event loop's current round ends they leave as one (on loopback under load
the syscalls cost more than the rest of a small append's answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Annotated, Any, cast

import typer

from ailedger.cli._common import RpcOpt, WorkspaceOpt, err_console
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import InputError, NodeUnavailable, WorkspaceError

__all__ = ["serve"]

_MAX_BODY = 16 * 1024 * 1024


def _pick(fast: str, fallback: str) -> str:
    """``fast`` when that module is installed, else ``fallback`` (uvicorn's names)."""
    return fast if importlib.util.find_spec(fast) is not None else fallback


class _CoalescedTransport:
    """A transport whose writes are joined and sent once the event loop's current round ends.

    Everything but writing is the wrapped transport's; anything that may close or hand over
    the connection sends what is buffered first, so bytes keep their order.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Buffer ``data``; the first write of a round schedules the flush."""
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is buffered, as one write."""
        if self._buffer:
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _coalescing(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP ``protocol`` whose connection writes are coalesced."""

    class Coalescing(protocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # the request cycles write through self.transport; flow control and the
            # addresses above keep the real one
            self.transport = _CoalescedTransport(
                cast("asyncio.Transport", transport), asyncio.get_running_loop()
            )

    Coalescing.__name__ = Coalescing.__qualname__ = f"Coalescing{protocol.__name__}"
    return Coalescing


def _http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol when installed (else h11), with coalesced writes."""
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return _coalescing(HttpToolsProtocol)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return _coalescing(H11Protocol)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve --host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}"


def _check_published(ws: Any, log: Any, rpc: str | None) -> None:
    """Refuse to serve (and sign) a log that conflicts with its operator's anchors on chain;
    a chain that cannot be reached now is only warned about (anchoring checks again)."""
    from ailedger.auditlog.anchoring import chain_anchors, check_published

    try:
        with ws.ledger(rpc=rpc) as ledger:
            try:
                registry = ws.anchor_registry(ledger)
            except WorkspaceError:  # no registry on this chain yet: nothing was anchored there
                return
            anchors = chain_anchors(registry, log.origin_hash, operator=ws.keystore().address)
    except (NodeUnavailable, WorkspaceError) as exc:
        err_console.print(f"warning: the log's anchors cannot be checked now: {exc}")
        return
    check_published(log, anchors)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8080,
    checkpoint_interval: Annotated[
        float,
        typer.Option(help="Sign a checkpoint at most this often, in seconds, when the log grew."),
    ] = 1.0,
    anchor_every: Annotated[
        int, typer.Option(min=1, help="Anchor on chain every N entries.")
    ] = 1000,
    anchor_seconds: Annotated[
        float, typer.Option(help="...or every T seconds, whichever comes first.")
    ] = 60.0,
    anchor_min_gap: Annotated[
        float,
        typer.Option(help="Anchor at most this often, in seconds, however many entries came."),
    ] = 5.0,
    no_anchor: Annotated[bool, typer.Option("--no-anchor", help="Do not anchor on chain.")] = False,
    max_body: Annotated[
        int, typer.Option(min=1, help="Largest request body taken, in bytes.")
    ] = _MAX_BODY,
    encoder_process: Annotated[
        bool,
        typer.Option(
            help="Decode and encode batch bodies in a second process (a second core), "
            "when the machine has more than one CPU."
        ),
    ] = True,
    unsafe_non_loopback: Annotated[
        bool,
        typer.Option(
            "--unsafe-non-loopback",
            help="Allow a --host that is not loopback (put TLS in front of it).",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
) -> None:
    """Serve the workspace's audit log over HTTP (API, tlog-tiles, dashboard, metrics)."""
    import uvicorn

    from ailedger.auditlog.anchoring import Anchorer
    from ailedger.auditlog.backend import open_log
    from ailedger.auditlog.log import AuditLog
    from ailedger.service.app import create_app
    from ailedger.service.auth import ApiKeys, RateLimiter
    from ailedger.service.background import AnchorLoop, CheckpointSigner
    from ailedger.service.context import ServiceContext
    from ailedger.workspace import Workspace

    for value, what in (
        (checkpoint_interval, "--checkpoint-interval"),
        (anchor_seconds, "--anchor-seconds"),
        (anchor_min_gap, "--anchor-min-gap"),
    ):
        if not 0 < value < float("inf"):
            raise InputError(f"{what} must be a positive number of seconds, got {value}")
    if not _is_loopback(host):
        if not unsafe_non_loopback:
            raise InputError(
                f"--host {host} is not a loopback address: add --unsafe-non-loopback to serve "
                "other machines"
            )
        err_console.print(
            f"warning: serving on {host}, reachable from other machines: "
            "API keys and data travel in clear unless TLS is put in front"
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    ws = Workspace.open(workspace_path(workspace))
    passphrase = passphrase_source()
    signing_key = ws.signing_key(passphrase)
    # the store config.toml names (SQLite, or PostgreSQL shared by replicas); both backends
    # have the same public interface (ailedger.auditlog.backend)
    log: AuditLog = open_log(ws)
    with contextlib.ExitStack() as stack:
        stack.callback(log.close)
        _check_published(ws, log, rpc)
        keys = stack.enter_context(ApiKeys.for_workspace(ws))
        ctx = ServiceContext(
            workspace=ws,
            log=log,
            keys=keys,
            limiter=RateLimiter.for_workspace(ws),
            rpc=rpc,
        )
        signer = CheckpointSigner(log, signing_key, interval=checkpoint_interval)
        loop = None
        if not no_anchor:

            @contextlib.contextmanager
            def open_anchorer() -> Iterator[Anchorer]:
                from ailedger.sentinel.fee_advice import configured_fee_advisor

                with ws.ledger(rpc=rpc, passphrase=passphrase) as ledger:
                    yield Anchorer(
                        log=log,
                        registry=ws.anchor_registry(ledger),
                        key=signing_key,
                        fee_advisor=configured_fee_advisor(ws.config.get("chain", {}), ledger),
                    )

            loop = AnchorLoop(
                log,
                open_anchorer,
                every_entries=anchor_every,
                every_seconds=anchor_seconds,
                min_gap=anchor_min_gap,
            )
        app = create_app(
            ctx,
            max_body=max_body,
            signer=signer,
            anchor_loop=loop,
            encoder_process=encoder_process and (os.cpu_count() or 1) > 1,
        )
        sock = stack.enter_context(_bind(host, port))
        url = _url(sock)
        log.announce_holder(url=url)

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started:
                    sys.stdout.write(f"serving {url}\n")
                    sys.stdout.flush()

        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            # the C event loop and HTTP parser when installed (the ``service`` extra has
            # them); no X-Forwarded-* rewriting: nothing sits in front of a loopback server
            loop=_pick("uvloop", "asyncio"),
            http=_http_protocol(),
            proxy_headers=False,
            server_header=False,
        )
        Server(config).run(sockets=[sock])
