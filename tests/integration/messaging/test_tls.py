"""NATS over TLS, mutual: a real nats-server with a test CA, hulk's connection settings, JetStream."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.streams import StreamSettings, ensure_streams
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration


def _issue(
    directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, usage: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if usage == "server":
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = _issue(certs, "ca", None, "ca")
    _issue(certs, "server", ca, "server")
    _issue(certs, "client", ca, "client")
    server = NatsServer(
        tmp_path / "nats",
        extra_args=[
            "--tlsverify",
            "--tlscert",
            str(certs / "server.pem"),
            "--tlskey",
            str(certs / "server.key"),
            "--tlscacert",
            str(certs / "ca.pem"),
        ],
    )
    server.start()
    try:
        yield server, certs
    finally:
        server.kill()


async def test_mutual_tls_connection_reaches_jetstream(tls_server: tuple[NatsServer, Path]) -> None:
    server, certs = tls_server
    url = server.url.replace("nats://", "tls://")
    conn = NatsConnection(
        ConnectionSettings(
            urls=(url,),
            tls_ca_file=str(certs / "ca.pem"),
            tls_cert_file=str(certs / "client.pem"),
            tls_key_file=str(certs / "client.key"),
        )
    )
    await conn.connect(timeout=10)
    try:
        await ensure_streams(conn.js, StreamSettings())
        ack = await conn.js.publish("hulk.task.created", b"{}")
        assert ack.stream == "HULK_ENGINE_EVENTS"
    finally:
        await conn.close()


async def test_a_client_without_its_certificate_is_refused(tls_server: tuple[NatsServer, Path]) -> None:
    server, certs = tls_server
    conn = NatsConnection(
        ConnectionSettings(urls=(server.url.replace("nats://", "tls://"),), tls_ca_file=str(certs / "ca.pem"))
    )
    # The server ends the handshake of a client with no certificate: never connected.
    with pytest.raises(TimeoutError, match="not reachable"):
        await conn.connect(timeout=3)
    assert not conn.connected
    await conn.close()
