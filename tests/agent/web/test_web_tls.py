"""Real TLS handshakes against a real aiohttp server: refusals are refused AND counted; rotation works."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from hostmond.web.config import TLSServerConfig, WebConfig

from .conftest import PKI, Issued, StartServer, client_ctx, eventually, get

CLIENT_ERRORS = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


async def peer_cn(port: int, ca: Path, server_hostname: str, cert: Issued | None = None) -> str:
    """Handshake, then return the CN of the certificate the server presented."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx(ca, cert), server_hostname=server_hostname
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        # TLS 1.3: a refused client certificate shows on the first read, so make one request
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        if not reply.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"no 200: {reply[:60]!r}")
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def mtls_config(pki: PKI, **tls: object) -> WebConfig:
    t = TLSServerConfig(
        cert_file=str(pki.server.cert),
        key_file=str(pki.server.key),
        client_ca_file=str(pki.ca.cert),
        client_auth_type="RequireAndVerifyClientCert",
    )
    for k, v in tls.items():
        setattr(t, k, v)
    return WebConfig(tls_server_config=t)


async def test_client_with_certificate_from_the_trusted_ca_is_served(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki))
    status, _, body = await get(srv.url("/metrics"), ctx=client_ctx(pki.ca.cert, pki.client))
    assert status == 200
    assert 'hostmon_web_requests_refused_total{server="agent",reason="tls_client_cert_missing"} 0' in body


async def test_missing_client_certificate_is_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki))
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "127.0.0.1")
    await eventually(lambda: srv.refused("tls_client_cert_missing") == 1)
    assert srv.refused("tls_client_cert_untrusted") == 0


async def test_expired_client_certificate_is_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki))
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.expired_client)
    await eventually(lambda: srv.refused("tls_client_cert_expired") == 1)


async def test_client_certificate_from_a_wrong_ca_is_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki))
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.wrong_client)
    await eventually(lambda: srv.refused("tls_client_cert_untrusted") == 1)
    assert srv.refused("tls_client_cert_expired") == 0


async def test_plain_http_to_the_tls_port_is_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki, client_auth_type="NoClientCert", client_ca_file=None))
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert b"200 OK" not in reply and b"hostmon_web" not in reply
    await eventually(lambda: srv.refused("tls_plain_http") == 1)


async def test_tls_below_min_version_is_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(mtls_config(pki, client_auth_type="NoClientCert", client_ca_file=None, min_version="TLS13"))
    ctx = client_ctx(pki.ca.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(CLIENT_ERRORS):
        await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx)
    await eventually(lambda: srv.refused("tls_protocol_version") == 1)


async def test_client_allowed_sans_refuses_a_verified_certificate_without_a_listed_san(
    pki: PKI, start_server: StartServer
) -> None:
    srv = await start_server(mtls_config(pki, client_allowed_sans=["spiffe://hostmon/agent-01"]))
    status, _, _ = await get(srv.url("/healthz"), ctx=client_ctx(pki.ca.cert, pki.client))
    assert status == 200
    srv2 = await start_server(mtls_config(pki, client_allowed_sans=["spiffe://hostmon/someone-else"]))
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv2.port, pki.ca.cert, "127.0.0.1", pki.client)
    await eventually(lambda: srv2.refused("tls_client_cert_not_allowed") == 1)


async def test_verify_if_given_serves_clients_without_a_certificate_but_refuses_a_bad_one(
    pki: PKI, start_server: StartServer
) -> None:
    srv = await start_server(mtls_config(pki, client_auth_type="VerifyClientCertIfGiven"))
    status, _, _ = await get(srv.url("/healthz"), ctx=client_ctx(pki.ca.cert))
    assert status == 200
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.wrong_client)
    await eventually(lambda: srv.refused("tls_client_cert_untrusted") == 1)


# ---------------------------------------------------------------------------
# rotation


def replace_file(src: Path, dst: Path) -> None:
    """Atomic replace, keeping 0600 on keys (what cert-manager/kubelet do in effect)."""
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o600)
    os.replace(tmp, dst)


async def test_rotation_new_handshakes_see_the_new_certificate_and_a_corrupt_one_keeps_the_old(
    pki: PKI, start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    replace_file(pki.server.cert, cert)
    replace_file(pki.server.key, key)
    cfg = WebConfig(
        tls_server_config=TLSServerConfig(cert_file=str(cert), key_file=str(key)), reload_interval=0.05
    )
    srv = await start_server(cfg)
    # connect by IP (no SNI sent) and by name (SNI sent): both paths pick the current context
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server one"
    assert await peer_cn(srv.port, pki.ca.cert, "localhost") == "CN=hostmon server one"

    replace_file(pki.server2.key, key)
    replace_file(pki.server2.cert, cert)
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["success"] == 1)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server two"
    assert await peer_cn(srv.port, pki.ca.cert, "localhost") == "CN=hostmon server two"
    assert srv.sec.tls is not None and srv.sec.tls.not_after == pki.server2.obj.not_valid_after_utc.timestamp()

    # a corrupt certificate: refused with a log line, the previous chain stays in force
    with caplog.at_level("ERROR", logger="hostmon.web"):
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["failure"] == 1)
    assert "keeping the previous certificate in force" in caplog.text
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server two"

    # a certificate that does not match the key: refused too
    replace_file(pki.server.cert, cert)  # key is still server2's
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["failure"] == 2)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server two"
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in srv.sec.self_metrics()}
    assert metrics[("hostmon_web_tls_reloads_total", (("result", "failure"), ("server", "agent")))] == 2
    assert metrics[("hostmon_web_tls_reloads_total", (("result", "success"), ("server", "agent")))] == 1

    # the matching key arrives: rotation completes
    replace_file(pki.server.key, key)
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["success"] == 2)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server one"


async def test_rotated_key_readable_by_others_is_refused(pki: PKI, start_server: StartServer, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    replace_file(pki.server.cert, cert)
    replace_file(pki.server.key, key)
    srv = await start_server(
        WebConfig(tls_server_config=TLSServerConfig(cert_file=str(cert), key_file=str(key)), reload_interval=0.05)
    )
    replace_file(pki.server2.cert, cert)
    shutil.copyfile(pki.server2.key, key)
    key.chmod(0o644)
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["failure"] == 1)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server one"
    key.chmod(0o600)
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["success"] == 1)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1") == "CN=hostmon server two"


async def test_rotating_the_client_ca_changes_which_clients_are_trusted(
    pki: PKI, start_server: StartServer, tmp_path: Path
) -> None:
    ca_file = tmp_path / "clients-ca.crt"
    replace_file(pki.ca.cert, ca_file)
    cfg = mtls_config(pki, client_ca_file=str(ca_file))
    cfg.reload_interval = 0.05
    srv = await start_server(cfg)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.client) == "CN=hostmon server one"
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.client_ca2)

    replace_file(pki.ca2.cert, ca_file)
    await eventually(lambda: srv.sec.tls is not None and srv.sec.tls.reloads["success"] == 1)
    assert await peer_cn(srv.port, pki.ca.cert, "127.0.0.1", pki.client_ca2) == "CN=hostmon server one"
    with pytest.raises(CLIENT_ERRORS):
        await peer_cn(srv.port, pki.ca.cert, "localhost", pki.client)
    await eventually(lambda: srv.refused("tls_client_cert_untrusted") == 2)
