"""Benchmark: DTLS 1.2 PSK libraries side by side, in memory (no sockets).

For each library that can be both ends of a PSK handshake from Python, run
``--handshakes`` full handshakes (cookie exchange included) between an
in-process client and server whose datagrams are handed over directly, and
report handshakes per second (client and server work together, on one core)
and the server-side memory per established session (RSS growth with the
clients freed and ``malloc_trim``; approximate).

Libraries: Mbed TLS 2.28 (python-mbedtls, what msgin5g uses) and tinydtls
(DTLSSocket, what aiocoap uses). OpenSSL is not here: pyOpenSSL has DTLS but no
PSK callbacks (docs/security-dtls.md). Not a test.

Run: ``.venv/bin/python benchmarks/dtls_libraries.py [--handshakes 2000]``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = b"0123456789abcdef"  # 16 octets: the most tinydtls takes


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def mbedtls_pairs(count: int) -> tuple[float, float]:
    """(handshakes/s, server bytes per session) for Mbed TLS."""
    from mbedtls.tls import (
        ClientContext,
        DTLSConfiguration,
        DTLSVersion,
        HandshakeStep,
        HelloVerifyRequest,
        ServerContext,
        WantReadError,
        WantWriteError,
    )

    common: dict[str, Any] = {
        "ciphers": ("TLS-PSK-WITH-AES-128-CCM-8",),
        "lowest_supported_version": DTLSVersion.DTLSv1_2,
        "highest_supported_version": DTLSVersion.DTLSv1_2,
        "validate_certificates": False,
    }
    server_ctx = ServerContext(
        DTLSConfiguration(pre_shared_key_store={"ue": KEY}, **common)
    )
    client_ctx = ClientContext(DTLSConfiguration(pre_shared_key=("ue", KEY), **common))
    over = HandshakeStep.HANDSHAKE_OVER

    def step(buffer: Any) -> None:
        try:
            buffer.do_handshake()
        except (WantReadError, WantWriteError):
            pass

    def move(source: Any, target: Any) -> None:
        data = source.peek_outgoing(1 << 16)
        if data:
            source.consume_outgoing(len(data))
            target.receive_from_network(data)

    servers = []
    _trim()
    before = _rss_kib()
    start = time.perf_counter()
    for index in range(count):
        client = client_ctx.wrap_buffers(None)
        server = server_ctx.wrap_buffers()
        server.setcookieparam(str(index).encode())
        for _ in range(60):
            if client._handshake_state is over and server._handshake_state is over:
                break
            step(client)
            move(client, server)
            try:
                if server._handshake_state is not over:
                    server.do_handshake()
            except (WantReadError, WantWriteError):
                pass
            except HelloVerifyRequest:  # stateless: the context was reset
                server.setcookieparam(str(index).encode())
            move(server, client)
        assert server._handshake_state is over
        servers.append(server)
        del client
    elapsed = time.perf_counter() - start
    _trim()
    return count / elapsed, (_rss_kib() - before) * 1024 / count


def tinydtls_pairs(count: int) -> tuple[float, float]:
    """(handshakes/s, server bytes per session) for tinydtls (DTLSSocket)."""
    from DTLSSocket import dtls

    to_server: list[tuple[Any, bytes]] = []
    to_client: list[bytes] = []
    connected: list[bool] = []

    def server_write(addr: Any, data: bytes) -> int:
        to_client.append(data)
        return len(data)

    def client_write(addr: Any, data: bytes) -> int:
        to_server.append((addr, data))
        return len(data)

    def on_event(level: int, code: int) -> None:
        if code == 0x1DE:  # DTLS_EVENT_CONNECTED
            connected.append(True)

    server = dtls.DTLS(
        write=server_write,
        read=lambda a, d: len(d),
        event=lambda level, code: None,
        pskStore={b"ue": KEY},
    )
    _trim()
    before = _rss_kib()
    start = time.perf_counter()
    for index in range(count):
        client = dtls.DTLS(
            write=client_write,
            read=lambda a, d: len(d),
            event=on_event,
            pskId=b"ue",
            pskStore={b"ue": KEY},
        )
        port = 1024 + index
        connection = client.connect("::ffff:127.0.0.1", port)
        peer = dtls.Session("::ffff:127.0.0.2", port)
        for _ in range(60):
            while to_server:
                _, data = to_server.pop(0)
                server.handleMessage(peer, data)
            while to_client:
                client.handleMessage(
                    dtls.Session("::ffff:127.0.0.1", port), to_client.pop(0)
                )
            if not to_server and not to_client:
                break
        del connection, client
    elapsed = time.perf_counter() - start
    assert len(connected) == count, (len(connected), count)
    _trim()
    return count / elapsed, (_rss_kib() - before) * 1024 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=2000)
    args = parser.parse_args()
    runs: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("Mbed TLS 2.28 (python-mbedtls)", mbedtls_pairs),
        ("tinydtls (DTLSSocket)", tinydtls_pairs),
    ]
    for name, run in runs:
        try:
            rate, per_session = run(args.handshakes)
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        print(
            f"{name}: {rate:,.0f} handshakes/s (client+server on one core), "
            f"~{per_session / 1024:.1f} KiB per server session"
        )


if __name__ == "__main__":
    main()
