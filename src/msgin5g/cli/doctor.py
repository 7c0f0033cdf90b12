"""``msgin5g doctor``: check a server configuration end to end and say what is wrong.

Imported only when the command runs. Each check prints one line, ``ok``,
``warn`` or ``FAIL``, what it found and, for a problem, a hint:

* configuration: the file, ``MSGIN5G_*`` and options load and validate;
* storage: the backend opens (SQLite: the file and its folder are writable,
  the schema is migrated; NATS: the server answers) and answers a read;
* CoAP port (when plain CoAP is served): the UDP address can be bound; if it
  is taken, whether an MSGin5G server answers there (a CoAP ping: an RST means
  someone speaks CoAP);
* coaps port (when ``coap.secure_bind`` is set): the UDP address can be bound;
  if it is taken, whether a DTLS server answers there (a ClientHello without
  cookie gets a HelloVerifyRequest, as msgin5g's does: :mod:`.doctor_probes`);
* HTTP port (when ``rest.enabled``): the TCP address can be bound; if it is
  taken, whether it is a msgin5g server (``/healthz``, ``/readyz``; over TLS
  when ``rest.tls_cert`` is set); with ``rest.tls_cert``, that the certificate
  and key load;
* MQTT broker (when ``mqtt.url`` is set): a real MQTT CONNECT with the
  configured credentials and TLS files gets a CONNACK within 5 s;
* peers: the external SEAL group management server (``seal.gm_url``) answers.

The exit status is 1 when a check failed, else 0: ``msgin5g doctor && msgin5g
serve`` starts only a configuration that can start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from msgin5g.cli.common import server_config
from msgin5g.errors import MSGin5GError

if TYPE_CHECKING:
    from msgin5g.config import ServerConfig

__all__ = ["run_doctor"]

_TIMEOUT = 3.0
_MQTT_TIMEOUT = 5.0
_PING = b"\x40\x00\x12\x34"  # CoAP CON, code 0.00 (empty): a "CoAP ping"


class _Report:
    """Collects check lines and whether any failed."""

    def __init__(self) -> None:
        self.failed = 0

    def line(self, status: str, check: str, text: str, hint: str = "") -> None:
        if status == "FAIL":
            self.failed += 1
        print(f"{status:<4}  {check:<13} {text}", flush=True)
        if hint:
            print(f"{'':<19} hint: {hint}", flush=True)


async def run_doctor(args: argparse.Namespace) -> int:
    """Run every check; returns 1 if one failed."""
    report = _Report()
    try:
        config = server_config(args)
    except MSGin5GError as exc:
        report.line("FAIL", "configuration", str(exc), "fix the key named above")
        return 1
    source = getattr(args, "config", None) or "defaults, MSGIN5G_*, options"
    report.line("ok", "configuration", f"loaded ({source})")
    await _storage(config, report)
    if config.coap.insecure_allowed:
        await _udp_port(config.coap.address, _COAP, report)
    secure = config.coap.secure_address
    if secure is not None:
        await _udp_port(secure, _COAPS, report)
    if config.rest.enabled:
        if config.rest.tls_cert:
            _tls_files(config, report)
        await _http(config, report)
    else:
        report.line("ok", "http", "REST APIs off (rest.enabled = false): no /metrics")
    if config.mqtt.url:
        await _mqtt(config, report)
    if config.seal.gm_url:
        await _peer("seal gm", config.seal.gm_url, report)
    return 1 if report.failed else 0


async def _storage(config: ServerConfig, report: _Report) -> None:
    from msgin5g.storage import open_backend

    url = config.storage.url
    path = _sqlite_path(url)
    if path is not None:
        folder = path.parent
        if not folder.is_dir():
            report.line("FAIL", "storage", f"{url}: folder {folder} does not exist",
                        "create it, or change storage.url / --storage")  # fmt: skip
            return
        target = path if path.exists() else folder
        if not os.access(target, os.W_OK):
            report.line("FAIL", "storage", f"{url}: {target} is not writable",
                        "fix its owner or permissions")  # fmt: skip
            return
    try:
        backend = open_backend(url, synchronous=config.storage.synchronous)
        async with asyncio.timeout(10):
            await backend.start()
            try:
                items = await backend.count()
            finally:
                await backend.aclose()
    except (MSGin5GError, OSError, TimeoutError) as exc:
        report.line("FAIL", "storage", f"{url}: {exc or type(exc).__name__}",
                    "check storage.url and that the backend is up")  # fmt: skip
        return
    report.line("ok", "storage", f"{url} opens and answers ({items} stored items)")


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///")).resolve()


@dataclass(frozen=True)
class _UdpCheck:
    """One UDP port check: its name, what answers there, what to say."""

    name: str
    option: str  # where the address is configured
    speaks: str  # "a CoAP server that answers a ping", ...
    scheme: str  # the URI scheme devices then use
    probe: Callable[[str, int], bool]  # whether a server of that kind answers


async def _udp_port(
    address: tuple[str, int], check: _UdpCheck, report: _Report
) -> None:
    """The UDP address binds; if taken, whether a msgin5g-like server answers."""
    host, port = address
    where = f"udp {host}:{port}"
    try:
        with socket.socket(_family(host, socket.SOCK_DGRAM), socket.SOCK_DGRAM) as s:
            s.bind((host, port))
    except OSError as exc:
        if not _taken(exc):
            report.line("FAIL", check.name, f"{where}: {exc.strerror or exc}",
                        f"check {check.option}")  # fmt: skip
            return
        if await asyncio.to_thread(check.probe, _loopback(host), port):
            report.line("warn", check.name,
                        f"{where} is taken by {check.speaks} "
                        "(msgin5g serve already running?)",
                        f"stop it, or pick another port: {check.option}")  # fmt: skip
        else:
            report.line("FAIL", check.name, f"{where} is taken by another process",
                        f"pick another port: {check.option} (devices then need "
                        f"--server {check.scheme}://HOST:PORT or MSGIN5G_SERVER)")  # fmt: skip
        return
    report.line("ok", check.name, f"{where} is free")


def _dtls_probe(host: str, port: int) -> bool:
    from msgin5g.cli.doctor_probes import dtls_answers

    return dtls_answers(host, port, _TIMEOUT)


_COAP = _UdpCheck(
    "coap port", "--coap HOST:PORT", "a CoAP server that answers a ping", "coap",
    lambda host, port: _coap_ping(host, port),
)  # fmt: skip
_COAPS = _UdpCheck(
    "coaps port", "--coaps HOST:PORT", "a DTLS server that answers a ClientHello",
    "coaps", _dtls_probe,
)  # fmt: skip


def _loopback(host: str) -> str:
    """Where to reach a server bound to ``host`` from here."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return "::1" if target == "::" else target


def _coap_ping(host: str, port: int) -> bool:
    """Whether a CoAP endpoint at (host, port) answers an empty CON."""
    target = _loopback(host)
    try:
        with socket.socket(_family(target, socket.SOCK_DGRAM), socket.SOCK_DGRAM) as s:
            s.settimeout(_TIMEOUT)
            s.sendto(_PING, (target, port))
            data = s.recv(64)
    except OSError:
        return False
    return len(data) >= 4 and data[2:4] == _PING[2:4]


async def _http(config: ServerConfig, report: _Report) -> None:
    host, port = config.rest.address
    where = f"{'https' if config.rest.tls_cert else 'http'} {host}:{port}"
    try:
        with socket.socket(_family(host, socket.SOCK_STREAM), socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as exc:
        if not _taken(exc):
            report.line("FAIL", "http port", f"{where}: {exc.strerror or exc}",
                        "check rest.bind / --http")  # fmt: skip
            return
        await _running(host, port, where, report, tls=bool(config.rest.tls_cert))
        return
    report.line("ok", "http port", f"{where} is free")


def _tls_files(config: ServerConfig, report: _Report) -> None:
    """``rest.tls_cert`` and ``rest.tls_key`` load as a certificate chain."""
    import ssl

    cert, key = config.rest.tls_cert, config.rest.tls_key
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        report.line("FAIL", "http tls", f"{cert} / {key}: {exc}",
                    "rest.tls_cert and rest.tls_key: PEM certificate (chain) "
                    "and its private key, readable by the server")  # fmt: skip
        return
    report.line("ok", "http tls", f"{cert} and its key load (HTTPS)")


async def _running(
    host: str, port: int, where: str, report: _Report, *, tls: bool
) -> None:
    """The HTTP port is taken: a msgin5g server (and is it ready), or not.

    Over TLS the certificate is not verified: this asks who holds the port,
    and the certificate was checked by :func:`_tls_files`.
    """
    target = _loopback(host)
    scheme = "https" if tls else "http"
    base = (
        f"{scheme}://[{target}]:{port}"
        if ":" in target
        else f"{scheme}://{target}:{port}"
    )
    health: httpx.Response | None
    ready: httpx.Response | None
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=_TIMEOUT, verify=not tls
        ) as http:
            health = await http.get("/healthz")
            ready = await http.get("/readyz") if health.status_code == 200 else None
    except httpx.HTTPError:
        health = ready = None
    if health is None or health.status_code != 200:
        report.line("FAIL", "http port", f"{where} is taken by another process"
                    + (" (no HTTPS /healthz there)" if tls else ""),
                    "pick another port: --http HOST:PORT (ASs then need "
                    "--server http://HOST:PORT)")  # fmt: skip
        return
    if ready is not None and ready.status_code == 200:
        report.line("warn", "http port",
                    f"{where}: msgin5g serve already runs there, and is ready",
                    f"its figures: curl {base}/metrics")  # fmt: skip
        return
    detail = ready.text if ready is not None else "no /readyz"
    report.line("FAIL", "http port",
                f"{where}: msgin5g serve runs there but is not ready: {detail}",
                "see its log")  # fmt: skip


async def _mqtt(config: ServerConfig, report: _Report) -> None:
    from msgin5g.cli.doctor_probes import mqtt_connect

    url = config.mqtt.url
    try:
        why = await mqtt_connect(config.mqtt, within=_MQTT_TIMEOUT)
    except ModuleNotFoundError as exc:
        report.line("FAIL", "mqtt broker", f"mqtt.url is set but {exc.name} is missing",
                    "pip install 'msgin5g[mqtt]'")  # fmt: skip
        return
    if why is not None:
        report.line("FAIL", "mqtt broker", why,
                    "is the broker up? check mqtt.url, mqtt.username / "
                    "MSGIN5G_MQTT_PASSWORD and the TLS files")  # fmt: skip
        return
    user = f" as {config.mqtt.username}" if config.mqtt.username else ""
    report.line("ok", "mqtt broker", f"{url} accepts an MQTT CONNECT{user}")


async def _peer(name: str, url: str, report: _Report) -> None:
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
            reply = await http.get(url)
    except httpx.HTTPError as exc:
        report.line("FAIL", name, f"{url}: {exc or type(exc).__name__}",
                    "is the peer up and reachable from here?")  # fmt: skip
        return
    report.line("ok", name, f"{url} answers (HTTP {reply.status_code})")


def _family(host: str, kind: int) -> int:
    infos = socket.getaddrinfo(host, None, type=kind, flags=socket.AI_PASSIVE)
    return int(infos[0][0])


def _taken(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EADDRINUSE, errno.EACCES)
