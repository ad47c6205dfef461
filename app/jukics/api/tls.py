"""Server TLS context for gunicorn: TLS 1.3, client certificate required, cached per worker.

Stock gunicorn builds a new SSLContext for every accepted connection (re-reading and re-parsing the
certificate, key and CA each time: ~1.2 ms, and with a TPM key a TPM2_Load per connection). We cache
one context per worker process and rebuild it only when one of the files changes, so a certificate
swap applies to new connections without a restart while connections in flight keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("jukics.tls")


@dataclass(frozen=True)
class ServerTlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path

    def fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        """Cheap change detector: (inode, size, mtime_ns) of each file (a rename swap changes the inode)."""
        out = []
        for p in (self.cert_file, self.key_file, self.client_ca_file):
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)


def build_server_context(files: ServerTlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(files.client_ca_file))  # one trust bundle, never the system store
    ctx.load_cert_chain(certfile=str(files.cert_file), keyfile=str(files.key_file))
    ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate again
    return ctx


class CachedContext:
    """One SSLContext per process, rebuilt when the files change; a broken new file keeps the old one."""

    def __init__(
        self, files: ServerTlsFiles, build: Callable[[ServerTlsFiles], ssl.SSLContext] = build_server_context
    ) -> None:
        self.files = files
        self.build = build
        self._pid: int | None = None
        self._stamp: object = None
        self._ctx: ssl.SSLContext | None = None
        self._failed_stamp: object = None

    def get(self) -> ssl.SSLContext:
        pid = os.getpid()
        try:
            stamp: object = self.files.fingerprint()
        except OSError:
            stamp = self._stamp  # a file briefly missing mid-swap: keep serving with what we have
        if self._ctx is None or pid != self._pid or stamp != self._stamp:
            try:
                ctx = self.build(self.files)
            except (ssl.SSLError, OSError) as exc:
                if self._ctx is None or pid != self._pid:
                    raise
                # Keep the working context (the operator's verify step reports the bad file), and say
                # so once per change, not once per connection.
                if stamp != self._failed_stamp:
                    log.error("TLS files changed but do not load (%s); still serving the previous certificate", exc)
                    self._failed_stamp = stamp
                return self._ctx
            self._ctx, self._pid, self._stamp = ctx, pid, stamp
        return self._ctx
