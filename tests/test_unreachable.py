"""An authorization server that cannot be reached: the error says what failed.

Every case is a real failure on loopback: a closed port (refused), a plain HTTP server spoken to
as https and a server with a self-signed certificate (TLS), a socket that accepts and never
answers (timeout). The name that does not resolve is under ``.invalid`` (RFC 6761), looked up by
the real resolver with ``AI_NUMERICHOST`` added, so that it fails here without asking a DNS
server: this machine's resolver forwards ``.invalid`` off the machine.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from planet_async import AuthorizationServer, AuthServerUnavailable

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5  # seconds: only the silent server waits for it


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def plain_http() -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1; its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def self_signed_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 whose certificate nobody signed; its port."""
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def silent() -> Iterator[int]:
    """A socket on 127.0.0.1 that accepts connections (the kernel's backlog) and never says a
    word; its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def local_resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names under .invalid go to the real resolver with AI_NUMERICHOST, which fails them at once
    without a DNS query; any other name is refused here. Returns the names looked up."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").endswith(".invalid"):
            looked_up.append(name)
            flags |= socket.AI_NUMERICHOST
        elif name not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"a test looked up {name!r}, which would leave this machine")
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


async def _failure(issuer: str) -> str:
    server = AuthorizationServer(issuer, timeout=TIMEOUT)
    with pytest.raises(AuthServerUnavailable) as info:
        await server.metadata()
    return str(info.value)


async def test_a_refused_connection_says_so() -> None:
    """Nothing listens on the port: the connection was refused, to that host and port."""
    port = closed_port()
    message = await _failure(f"https://127.0.0.1:{port}")
    assert message == (
        f"https://127.0.0.1:{port}/.well-known/openid-configuration could not be reached: "
        f"the connection to 127.0.0.1:{port} was refused (is the server running there?)"
    )


async def test_https_to_a_plain_http_server_is_a_tls_failure(plain_http: int) -> None:
    """An https URL on a plain HTTP server: TLS failed, and perhaps it is plain http."""
    message = await _failure(f"https://127.0.0.1:{plain_http}")
    assert message.endswith(
        "could not be reached: TLS failed: wrong version number (is it a plain http server?)"
    )


async def test_an_untrusted_certificate_is_a_tls_failure(self_signed_https: int) -> None:
    """A self-signed certificate: TLS failed because the certificate was refused, and why."""
    message = await _failure(f"https://127.0.0.1:{self_signed_https}")
    assert "could not be reached: TLS failed: the server's certificate was refused (" in message
    assert re.search(r"\(self.signed certificate", message)


async def test_a_silent_server_times_out(silent: int) -> None:
    """A server that accepts and never sends an HTTP response: it did not answer within the
    timeout."""
    message = await _failure(f"http://127.0.0.1:{silent}")
    assert message == (
        f"http://127.0.0.1:{silent}/.well-known/openid-configuration did not answer within "
        f"{TIMEOUT:g} s"
    )


async def test_a_server_that_never_finishes_the_tls_handshake_times_out(silent: int) -> None:
    """A server that accepts and never answers the TLS handshake: no connection within the half
    of the timeout connecting gets. httpx gives up and closes the socket (with the warnings that
    are errors here, a socket left to the garbage collector would fail a later test)."""
    message = await _failure(f"https://127.0.0.1:{silent}")
    assert message == (
        f"https://127.0.0.1:{silent}/.well-known/openid-configuration could not be reached: "
        f"no connection within {TIMEOUT / 2:g} s"
    )
    gc.collect()  # a leaked socket's ResourceWarning surfaces here, in this test


async def test_a_name_that_does_not_resolve_says_so(local_resolver: list[str]) -> None:
    """A host name no resolver knows: it could not be resolved, naming the host."""
    message = await _failure("https://login.planet-async-test.invalid")
    assert re.search(
        r"could not be reached: the host name 'login\.planet-async-test\.invalid' could not be "
        r"resolved \(.+\): check the URL and DNS$",
        message,
    )
    assert "login.planet-async-test.invalid" in local_resolver
