"""Two `msgin5g serve` processes on one NATS JetStream storage, REST over TLS
(HTTP/2 by ALPN) with OAuth2: a JWT issued by node A is accepted by node B; a
tampered one gets 401 ProblemDetails. Certificates are made here with
``cryptography``; the NATS server is a private ``nats-server -js``."""

import base64
import datetime
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import require_binary
from tests.e2e.conftest import ServerProcess, msgin5g
from tests.interop.openapi_support import free_tcp_port
from tests.problem_schema import assert_problem_details
from tests.storage.nats_server import NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REG = "/msgs-asregistration/v1/registrations"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "msgin5g test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Node(ServerProcess):
    """`msgin5g serve` on the shared NATS storage with HTTPS on its own port."""

    nats_url: str = ""
    http_port: int = 0

    @property
    def storage(self) -> str:
        return f"{self.nats_url}?prefix=tls"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"


@pytest.fixture(params=["granian", "hypercorn"])
def cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Node, Node, Path]]:
    jetstream = NatsServer(require_binary("nats-server"), tmp_path / "js")
    jetstream.start()
    cert, key = self_signed(tmp_path)
    nodes = []
    try:
        for name in ("a", "b"):
            port = free_tcp_port()
            node = Node(
                tmp_path / f"unused-{name}.db",
                nats_url=jetstream.url,
                http_port=port,
                extra=(
                    "--http", f"127.0.0.1:{port}",
                    "--set", "rest.enabled=true",
                    "--set", "rest.oauth2=true",
                    "--tls-cert", str(cert),
                    "--tls-key", str(key),
                    "--set", "log.level=WARNING",
                    "--set", f"rest.server={request.param}",
                    # node b issues short-lived tokens (node a checks their exp)
                    "--set", f"rest.token_lifetime={1 if name == 'b' else 3600}",
                ),
            )  # fmt: skip
            nodes.append(node)
        msgin5g("as", "add", "as1", "--secret", "as1-secret", "--storage",
                nodes[0].storage)  # fmt: skip
        for node in nodes:
            node.start()
        yield nodes[0], nodes[1], cert
    finally:
        for node in nodes:
            err = node.stop()
            assert "Traceback" not in err, err
        jetstream.stop()


def token_from(http: httpx.Client, node: Node) -> str:
    resp = http.post(
        f"{node.https}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "msgs-asregistration"},
        auth=("as1", "as1-secret"),
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def test_jwt_of_node_a_is_accepted_by_node_b_over_tls_h2(
    cluster: tuple[Node, Node, Path],
) -> None:
    node_a, node_b, cert = cluster
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(cert)), http2=True, timeout=10
    ) as http:
        token = token_from(http, node_a)
        resp = http.post(
            f"{node_b.https}{REG}",
            json={"asSvcId": "as1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 201, resp.text
        assert resp.http_version == "HTTP/2"
        # a tampered token (another client's id) is refused by either node
        header, payload, signature = token.split(".")
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        claims["client_id"] = claims["sub"] = "operator"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        for node in (node_a, node_b):
            resp = http.post(
                f"{node.https}{REG}",
                json={"asSvcId": "as1"},
                headers={
                    "Authorization": f"Bearer {header}.{forged.decode()}.{signature}"
                },
            )
            assert resp.status_code == 401
            assert resp.headers["content-type"] == "application/problem+json"
            assert_problem_details(resp.json())
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(cert)), http2=False, timeout=10
    ) as http1:
        resp = http1.get(f"{node_b.https}/openapi.json")
        assert resp.status_code == 200
        assert resp.http_version == "HTTP/1.1"


def test_expired_jwt_of_node_b_is_refused_by_node_a(
    cluster: tuple[Node, Node, Path],
) -> None:
    node_a, node_b, cert = cluster
    tls = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=tls, http2=True, timeout=10) as http:
        token = token_from(http, node_b)  # lives 1 s
        deadline = time.monotonic() + 30
        while True:
            resp = http.post(
                f"{node_a.https}{REG}",
                json={"asSvcId": "as1"},
                headers={"Authorization": f"Bearer {token}"},
            )
            if resp.status_code == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resp.status_code == 401, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert_problem_details(resp.json())


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("rest.jwt_key_file", "rest.jwt_key_file"),
        ("rest.tls_cert", "rest.tls_cert"),
    ],
)
def test_unreadable_key_or_certificate_stops_the_start_in_one_line(
    tmp_path: Path, setting: str, named: str
) -> None:
    cert, key = self_signed(tmp_path)
    settings = {
        "rest.tls_cert": str(cert),
        "rest.tls_key": str(key),
        setting: str(tmp_path / "absent.pem"),
    }
    result = msgin5g(
        "serve", "--coap", "127.0.0.1:0", "--http", f"127.0.0.1:{free_tcp_port()}",
        "--storage", f"sqlite:///{tmp_path / 'x.db'}",
        "--set", "rest.enabled=true", "--set", "rest.oauth2=true",
        *(arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert named in result.stderr
    assert "absent.pem" in result.stderr
