"""Server TLS: building the context, counting refused handshakes, rotating certificates.

How a refused handshake is counted
    A TLS handshake fails inside ``ssl``, before any handler runs, and asyncio
    only logs such failures in debug mode. The server's :class:`ssl.SSLContext`
    therefore gets its own ``sslobject_class`` (a documented hook: asyncio wraps
    every accepted connection with ``context.wrap_bio()``, which builds an object
    of that class). Our subclass's ``do_handshake()`` calls the real one; an
    :class:`ssl.SSLError` other than "want more data" is classified into a fixed
    reason (:data:`HANDSHAKE_REASONS`), counted, and re-raised, so asyncio closes
    the connection exactly as before. After a successful handshake the same hook
    enforces ``client_allowed_sans``. Connections closed by the client before it
    finished its hello, and handshakes that time out, never reach
    ``do_handshake()`` with an error and are not counted.

How certificates rotate without a restart
    The listener (hostmond.web.listen) keeps the context object it was given for the life of
    the listener. That *base* context carries an ``sni_callback`` (OpenSSL calls
    it for every ClientHello, with or without a server name) which points the
    connection at the *current* context. A timer (``reload_interval``, off the
    request path, file reads in a worker thread) compares the (inode, size,
    mtime) of the certificate, key and client-CA files; once a change has been
    stable for one check, a complete fresh context is built from the new files.
    Only if that succeeds does it become current: new handshakes present the new
    chain and verify clients against the new CA, connections already open are
    untouched. A file that does not load (corrupt, half-written, key not
    matching the certificate, key readable by others) is refused with one log
    line, counted as ``result="failure"``, and the previous context stays in
    force until the files change again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import stat
import time
from collections.abc import Callable
from typing import Any

from hostmond.web.config import (
    TLS_VERSIONS,
    TLSServerConfig,
    check_secret_file,
    openssl_cipher_name,
)

log = logging.getLogger("hostmon.web")

# Every reason a handshake can be refused for (fixed set: these become label values).
HANDSHAKE_REASONS = (
    "tls_plain_http",  # an HTTP (not HTTPS) request sent to the TLS port
    "tls_protocol_version",  # the client offered only TLS versions outside min_version..max_version
    "tls_no_shared_cipher",
    "tls_client_cert_missing",  # client certificate required, none sent
    "tls_client_cert_expired",  # client certificate expired or not yet valid
    "tls_client_cert_untrusted",  # not signed by client_ca_file (wrong CA, self-signed)
    "tls_client_cert_invalid",  # any other verification failure
    "tls_client_cert_not_allowed",  # verified, but no SAN in client_allowed_sans
    "tls_handshake_failed",  # anything else (garbage, client rejected our certificate, ...)
)

_SSL_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
# OpenSSL X509_V_ERR_* codes
_EXPIRED = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_UNTRUSTED = {2, 18, 19, 20, 21}  # unable to get issuer / self-signed / not trusted


def classify_handshake_error(exc: BaseException) -> str:
    """Map an ssl error raised by a server-side handshake to one of :data:`HANDSHAKE_REASONS`."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _EXPIRED:
            return "tls_client_cert_expired"
        if code in _UNTRUSTED:
            return "tls_client_cert_untrusted"
        return "tls_client_cert_invalid"
    reason = str(getattr(exc, "reason", "") or "").upper()
    if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST"):
        return "tls_plain_http"
    if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"):
        return "tls_protocol_version"
    if reason in ("NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"):
        return "tls_no_shared_cipher"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "CERTIFICATE_REQUIRED"):
        return "tls_client_cert_missing"
    if reason == "CERTIFICATE_VERIFY_FAILED":
        return "tls_client_cert_invalid"
    return "tls_handshake_failed"


def _verify_mode(client_auth_type: str) -> ssl.VerifyMode:
    if client_auth_type == "NoClientCert":
        return ssl.CERT_NONE
    if client_auth_type in ("RequestClientCert", "VerifyClientCertIfGiven"):
        return ssl.CERT_OPTIONAL
    return ssl.CERT_REQUIRED  # RequireAnyClientCert, RequireAndVerifyClientCert


def build_context(cfg: TLSServerConfig) -> ssl.SSLContext:
    """A complete server context from the files named in ``cfg``; raises ValueError/OSError/ssl.SSLError."""
    if not cfg.cert_file or not cfg.key_file:
        raise ValueError("cert_file and key_file are required for TLS")
    check_secret_file(cfg.key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[cfg.min_version]
    ctx.maximum_version = TLS_VERSIONS[cfg.max_version]
    if cfg.cipher_suites:
        names = [n for n in (openssl_cipher_name(c) for c in cfg.cipher_suites) if n]
        if names:
            ctx.set_ciphers(":".join(names))
    if cfg.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    ctx.verify_mode = _verify_mode(cfg.client_auth_type)
    if cfg.client_auth_type != "NoClientCert":
        if not cfg.client_ca_file:
            raise ValueError(f"client_auth_type {cfg.client_auth_type} needs client_ca_file")
        ctx.load_verify_locations(cafile=cfg.client_ca_file)
    return ctx


def cert_not_after(path: str) -> float | None:
    """Expiry (unix time) of the first certificate in a PEM file, or None if unreadable."""
    # imported here, not with the module: an agent without TLS never loads it (RSS)
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return cert.not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def _san_values(peercert: dict[str, Any]) -> set[str]:
    return {str(value) for _kind, value in peercert.get("subjectAltName", ())}


class _CountingSSLObject(ssl.SSLObject):
    """SSLObject whose handshake failures are counted (see the module docstring)."""

    _hostmon_tls: TLSManager | None = None

    def do_handshake(self) -> None:
        mgr = self._hostmon_tls
        try:
            super().do_handshake()
        except _SSL_WANT:
            raise
        except ssl.SSLError as exc:
            if mgr is not None:
                mgr.handshake_refused(classify_handshake_error(exc))
            raise
        if mgr is not None and mgr.allowed_sans:
            peer = self.getpeercert() or {}
            if not (_san_values(peer) & mgr.allowed_sans):
                mgr.handshake_refused("tls_client_cert_not_allowed")
                raise ssl.SSLError(ssl.SSL_ERROR_SSL, "client certificate has no SAN in client_allowed_sans")


@dataclasses.dataclass
class _Signature:
    files: tuple[tuple[int, int, int, int] | None, ...]


class TLSManager:
    """Owns the server's SSL context, counts refused handshakes, reloads changed files."""

    def __init__(self, cfg: TLSServerConfig, server: str, on_refused: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.server = server
        self._on_refused = on_refused
        self.allowed_sans = set(cfg.client_allowed_sans)
        self.reloads = {"success": 0, "failure": 0}
        self._paths = tuple(p for p in (cfg.cert_file, cfg.key_file, cfg.client_ca_file) if p)
        self._loaded_sig = self._signature()
        self._seen_sig = self._loaded_sig
        self._failed_sig: _Signature | None = None
        self.current = build_context(cfg)
        self.not_after = cert_not_after(cfg.cert_file or "")
        # the context handed to the listener: same settings, plus the two hooks
        self.base = build_context(cfg)
        self.base.sslobject_class = type("HostmonSSLObject", (_CountingSSLObject,), {"_hostmon_tls": self})
        self.base.sni_callback = self._select_context

    # -- handshake hooks ---------------------------------------------------

    def _select_context(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.current
        if sslobj.context is not current:
            sslobj.context = current

    def handshake_refused(self, reason: str) -> None:
        self._on_refused(reason)

    # -- rotation ------------------------------------------------------------

    def _signature(self) -> _Signature:
        out: list[tuple[int, int, int, int] | None] = []
        for p in self._paths:
            try:
                st = os.stat(p)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)))
            except OSError:
                out.append(None)
        return _Signature(tuple(out))

    def check_files(self) -> str | None:
        """One timer tick (run it in a worker thread): reload if the files changed and settled.

        Returns ``"success"`` or ``"failure"`` when a reload was attempted, else None.
        """
        sig = self._signature()
        previous, self._seen_sig = self._seen_sig, sig
        if sig == self._loaded_sig or sig != previous or sig == self._failed_sig:
            return None  # unchanged, still changing, or already refused in this state
        try:
            fresh = build_context(self.cfg)
        except (OSError, ValueError, ssl.SSLError) as e:
            self._failed_sig = sig
            self.reloads["failure"] += 1
            log.error(
                "web[%s]: the changed TLS files (%s) do not load, keeping the previous certificate in force: %s",
                self.server,
                ", ".join(self._paths),
                e,
            )
            return "failure"
        self.current = fresh
        self._loaded_sig = sig
        self._failed_sig = None
        self.not_after = cert_not_after(self.cfg.cert_file or "")
        self.reloads["success"] += 1
        log.info("web[%s]: reloaded TLS certificate, key and CA from %s", self.server, ", ".join(self._paths))
        return "success"

    def time_left(self) -> float | None:
        return None if self.not_after is None else self.not_after - time.time()
