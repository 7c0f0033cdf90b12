"""coaps:// with DTLS stacks we did not write: libcoap (OpenSSL, GnuTLS) and aiocoap (tinydtls).

Each registers as a UE over DTLS 1.2 PSK (identity = UE Service ID, key = its
PSK_TOKEN prefix) and sends a MSG that reaches another UE over its own DTLS
session.
"""

import asyncio
import json
from pathlib import Path

import pytest

from msgin5g.server import Server
from tests.conftest import fail_or_skip, require_binary
from tests.dtls_peer import (
    connected,
    dtls_stats,
    msg_json,
    reg_json,
    secure_address,
    secure_server,
    token,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


async def libcoap(binary: str, server: Server, key: str, payload: bytes) -> str:
    """POST ``payload`` with libcoap's client as ue1 over coaps://; its stdout."""
    path = require_binary(binary)
    host, port = secure_address(server)
    proc = await asyncio.create_subprocess_exec(
        path,
        "-B",
        "20",
        "-m",
        "post",
        "-t",
        "50",
        "-u",
        "ue1",
        "-k",
        key,
        "-e",
        payload.decode(),
        f"coaps://{host}:{port}/msgin5g",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


@pytest.mark.parametrize("binary", ["coap-client-openssl", "coap-client-gnutls"])
async def test_libcoap_registers_and_sends_over_dtls(
    tmp_path: Path, binary: str
) -> None:
    async with secure_server(tmp_path) as server:
        key = token("ue1")[:32]
        out = await libcoap(binary, server, key, reg_json("ue1"))
        assert json.loads(out)["registrationResult"] == "SUCCESS"
        ue2 = await connected(server, "ue2")
        out = await libcoap(binary, server, key, msg_json("ue1", "ue2", "lib-1"))
        assert json.loads(out)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await asyncio.wait_for(ue2.requests.get(), 30)
        assert json.loads(got.payload)["messageId"] == "lib-1"
        # a wrong key gets no session and no answer; the server keeps serving
        failures = dtls_stats(server)["handshake_failures"]
        out = await libcoap(binary, server, "wrong-key-of-ue1", reg_json("ue1"))
        assert "REGRESP" not in out  # libcoap reports the fatal alert instead
        assert dtls_stats(server)["handshake_failures"] > failures
        out = await libcoap(binary, server, key, reg_json("ue1"))
        assert json.loads(out)["registrationResult"] == "SUCCESS"
        await ue2.close()


async def test_aiocoap_tinydtls_registers_and_sends(tmp_path: Path) -> None:
    try:
        import DTLSSocket  # noqa: F401
        from aiocoap import POST, Context, Message
    except ImportError:
        fail_or_skip("DTLSSocket not installed (pip install 'msgin5g[dtls]')")
    # tinydtls takes pre-shared keys of at most 16 octets
    async with secure_server(tmp_path, dtls_key_length="16") as server:
        ue2 = await connected(server, "ue2", key_length=16)
        host, port = secure_address(server)
        uri = f"coaps://{host}:{port}/msgin5g"
        context = await Context.create_client_context()
        try:
            context.client_credentials.load_from_dict(
                {
                    f"coaps://{host}:{port}/*": {
                        "dtls": {
                            "psk": {"ascii": token("ue1")[:16]},
                            "client-identity": {"ascii": "ue1"},
                        }
                    }
                }
            )
            for payload, check in (
                (reg_json("ue1"), ("registrationResult", "SUCCESS")),
                (msg_json("ue1", "ue2", "aio-1"), ("deliveryStatus", "DELY_ACCEPTED")),
            ):
                request = Message(
                    code=POST, uri=uri, payload=payload, content_format=50
                )
                response = await asyncio.wait_for(context.request(request).response, 60)
                assert json.loads(response.payload)[check[0]] == check[1]
        finally:
            await context.shutdown()
        got = await asyncio.wait_for(ue2.requests.get(), 30)
        assert json.loads(got.payload)["messageId"] == "aio-1"
        await ue2.close()
