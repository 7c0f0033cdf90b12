"""`msgin5g ue add --dtls` and `msgin5g serve --coaps` as real processes."""

import asyncio
import json
from pathlib import Path

from msgin5g.model.credentials import psk_token
from tests.dtls_peer import DtlsPeer, msg_json, reg_json
from tests.e2e.conftest import ServerProcess, free_udp_port, msgin5g, spawn


async def test_serve_coaps_only_registers_and_delivers(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "msgin5g.toml"
    config.write_text(
        f'[coap]\npsk_store = "{tmp_path / "psk.db"}"\n'
        f'secure_bind = "127.0.0.1:{port}"\n'
        "[rest]\nenabled = false\n"
    )
    storage = f"sqlite:///{tmp_path / 'msgin5g.db'}"
    for ue in ("ue1", "ue2"):
        msgin5g(
            "ue",
            "add",
            ue,
            "--secret",
            f"s-{ue}",
            "--dtls",
            "--config",
            str(config),
            "--storage",
            storage,
        )
    proc = spawn("serve", "--config", str(config), "--storage", storage)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert f"coaps://127.0.0.1:{port}/msgin5g" in line, line
        # the msgin5g device CLI speaks coaps:// too (key = token prefix)
        cli = await asyncio.to_thread(
            msgin5g,
            "ue",
            "register",
            "ue1",
            "--secret",
            "s-ue1",
            "--server",
            f"coaps://127.0.0.1:{port}",
            "--bind",
            "127.0.0.1:0",
        )
        assert "SUCCESS" in cli.stdout, cli.stdout + cli.stderr
        peers = []
        for ue in ("ue1", "ue2"):
            peer = DtlsPeer(
                ("127.0.0.1", port), ue, psk_token(f"s-{ue}", ue)[:32].encode()
            )
            await peer.connect()
            answer = await peer.post(reg_json(ue))
            assert json.loads(answer.payload)["registrationResult"] == "SUCCESS"
            peers.append(peer)
        answer = await peers[0].post(msg_json("ue1", "ue2", "e2e-1"))
        assert json.loads(answer.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await asyncio.wait_for(peers[1].requests.get(), 30)
        assert json.loads(got.payload)["messageId"] == "e2e-1"
        for peer in peers:
            await peer.close()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "coap://" not in out  # plain CoAP is off once coaps:// is configured
    assert "INSECURE" not in err


def test_plain_coap_warns_loudly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "msgin5g.db")
    server.start()
    err = server.stop()
    assert "INSECURE: plain CoAP" in err
