"""Debian libcoap3-bin's coap-client-notls (a CoAP stack we did not write) against our server."""

import asyncio
import json
import socket
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg
from msgin5g.server import Server
from tests.conftest import fail_or_skip, require_binary

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


async def coap_client(*args: str) -> tuple[str, str]:
    binary = require_binary("coap-client-notls")
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-B",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode(), err.decode()


def uri(server: Server, path: str = "msgin5g") -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}/{path}"


def reg_json(ue: str, secret: str) -> str:
    return json.dumps(
        {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token(secret, ue),
            },
        }
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_libcoap_registers(server: Server) -> None:
    out, _ = await coap_client(
        "-m", "post", "-t", "50", "-e", reg_json("ue1", "secret-ue1"), uri(server)
    )
    assert json.loads(out) == {
        "messageType": "REGRESP",
        "ueServiceId": "ue1",
        "registrationResult": "SUCCESS",
    }
    out, _ = await coap_client(
        "-m", "post", "-t", "50", "-e", reg_json("ue1", "bad"), uri(server)
    )
    body = json.loads(out)
    assert body["registrationResult"] == "FAILURE"
    assert body["failureCause"] == "AUTHENTICATION_FAILED"


async def test_libcoap_ue_sends_to_our_client(server: Server) -> None:
    port = free_port()
    host, srv_port = server.coap_address
    out, _ = await coap_client(
        "-p",
        str(port),
        "-m",
        "post",
        "-t",
        "50",
        "-e",
        reg_json("ue1", "secret-ue1"),
        uri(server),
    )
    assert json.loads(out)["registrationResult"] == "SUCCESS"
    async with Client(
        "ue2", "secret-ue2", server=f"coap://{host}:{srv_port}", bind=("127.0.0.1", 0)
    ) as ue2:
        await ue2.register()
        msg = {
            "messageType": "MSG",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "messageId": "lib-1",
            "payload": "aGk=",
        }
        out, _ = await coap_client(
            "-p",
            str(port),
            "-m",
            "post",
            "-t",
            "50",
            "-e",
            json.dumps(msg),
            uri(server),
        )
        assert json.loads(out)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=5)
        assert isinstance(got.item, Msg) and got.item.payload == b"hi"
    # same MSG from another source port is a spoofed sender
    out, _ = await coap_client(
        "-m", "post", "-t", "50", "-e", json.dumps(msg), uri(server)
    )
    assert json.loads(out)["failureCause"] in {"NOT_AUTHORIZED", "NOT_REGISTERED"}


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        (["-m", "post", "-t", "0", "-e", "x"], "msgin5g", "4.15"),
        (["-m", "post", "-t", "50", "-e", "{}"], "elsewhere", "4.04"),
        (["-m", "get"], "msgin5g", "4.05"),
        (
            ["-m", "post", "-t", "50", "-e", '{"messageType":"NOPE"}'],
            "msgin5g",
            '4.00 {"messageType":"NOPE","failureCause":"UNSUPPORTED_MESSAGE_TYPE"',
        ),
        (["-m", "post", "-t", "50", "-e", "not json"], "msgin5g", "INVALID_MESSAGE"),
        (
            [
                "-m",
                "post",
                "-t",
                "50",
                "-e",
                '{"messageType":"REG","ueServiceId":"ue1"}',
            ],
            "msgin5g",
            "ueCredentialInfo",
        ),
        (["-m", "post", "-t", "50", "-e", "{" + " " * 2000 + "}"], "msgin5g", "4.13"),
    ],
)
async def test_libcoap_error_codes(
    server: Server, args: list[str], path: str, expected: str
) -> None:
    _, err = await coap_client(*args, uri(server, path))
    assert expected in err
    # and the server keeps serving
    out, _ = await coap_client(
        "-m", "post", "-t", "50", "-e", reg_json("ue2", "secret-ue2"), uri(server)
    )
    assert json.loads(out)["registrationResult"] == "SUCCESS"


NODE_COAP = Path(__file__).parent / "node" / "node_modules" / ".bin" / "coap"


async def test_node_coap_cli_registers(server: Server) -> None:
    if not NODE_COAP.exists():
        fail_or_skip("node coap-cli not installed (scripts/install runs npm ci)")
    proc = await asyncio.create_subprocess_exec(
        str(NODE_COAP),
        "post",
        "-q",
        "-O",
        "12,0x32",
        "-p",
        reg_json("ue1", "secret-ue1"),
        uri(server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert json.loads(out)["registrationResult"] == "SUCCESS", err
