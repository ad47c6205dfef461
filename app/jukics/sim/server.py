"""A small threaded HTTPS server for WSGI apps that requires a client certificate (the simulated peers).

stdlib only (wsgiref + socketserver): the simulated 都道府県サーバ and 全国サーバ run it on lab hosts,
in tests and in benchmarks. TLS 1.3, the trust bundle is the configured CA file only (never the
system store), no session tickets. The TLS handshake runs in the connection's own thread, so a slow
or bad client does not hold up the others. The verified client certificate's SANs reach the app as
``environ["jukics.peer_names"]``. The server certificate can be swapped at run time (the
"wrong certificate" fault), and the listener can be stopped and started again ("down").
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from jukics.links.transport import sans_of

log = logging.getLogger("jukics.sim.server")

WsgiApp = Callable[..., Any]


def server_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        server: _TlsServer = self.server  # type: ignore[assignment]
        raw = self.request
        raw.settimeout(30)
        self.request = server.context.wrap_socket(raw, server_side=True)  # the handshake, in this thread
        self.connection = self.request
        super().setup()

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        der = self.connection.getpeercert(binary_form=True) or b""
        env["jukics.peer_names"] = sorted(sans_of(der)) if der else []
        env["jukics.socket"] = self.connection
        return env

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _TlsServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext

    def handle_error(self, request: Any, client_address: Any) -> None:
        # failed handshakes (wrong CA, no certificate) and dropped connections are expected here
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _PlainServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class TlsWsgiServer:
    """``start()`` listens (port 0: an ephemeral port, kept across stop/start), ``stop()`` closes."""

    def __init__(self, app: WsgiApp, host: str, port: int, context: ssl.SSLContext) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.context = context
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            server = _TlsServer((self.host, self.port), _Handler)
            server.context = self.context
            server.set_app(self.app)
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"tls-{self.port}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(5)

    def set_context(self, context: ssl.SSLContext) -> None:
        """New connections get this certificate; connections in flight keep theirs."""
        self.context = context
        if self._server is not None:
            self._server.context = context


class PlainWsgiServer:
    """Plain HTTP for the admin API: loopback only (the caller checks the address)."""

    def __init__(self, app: WsgiApp, host: str, port: int) -> None:
        self._server = _PlainServer((host, port), _QuietHandler)
        self._server.set_app(app)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"admin-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def drop_connection(environ: dict[str, Any]) -> None:
    """Close the client's connection without an answer (the "lost acknowledgement" fault)."""
    sock = environ.get("jukics.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
