"""The multi-machine case on one box: cluster nodes in network namespaces.

Each msgin5g node runs in its own Linux network namespace with its own address
(10.<n>.0.11, .12), the UEs in a third (.21), the nats-server in the root
namespace (.1), all joined by a bridge: three "machines" that reach each other
only over IP, as separate hosts would. Needs root and iproute2 (`ip netns`);
skipped with the reason where the sandbox forbids namespaces.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.e2e.conftest import _env
from tests.storage.nats_server import NatsServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _netns_usable() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 (ip netns)"
    probe = f"m5probe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns refused here: {exc}"
    return None


@dataclass
class Net:
    """A bridge in the root namespace and namespaces hanging off it."""

    tag: str
    subnet: str

    @property
    def bridge(self) -> str:
        return f"m5br{self.tag}"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address(1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, name: str, host: int) -> str:
        ns = f"m5{name}{self.tag}"
        outside, inside = f"m5o{name}{self.tag}", f"m5i{name}{self.tag}"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def down(self, namespaces: list[str]) -> None:
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(
            ["ip", "link", "del", self.bridge], capture_output=True, check=False
        )


@pytest.fixture
def net() -> Iterator[tuple[Net, dict[str, str]]]:
    reason = _netns_usable()
    if reason is not None:
        pytest.skip(reason)
    tag = str(os.getpid() % 10000)
    network = Net(tag, f"10.{57 + os.getpid() % 100}.0")
    namespaces: dict[str, str] = {}
    try:
        network.up()
        for name, host in (("n1", 11), ("n2", 12), ("ue", 21)):
            namespaces[name] = network.host(name, host)
        yield network, namespaces
    finally:
        network.down(list(namespaces.values()))


def in_ns(ns: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "msgin5g", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def wait_line(proc: subprocess.Popen[str], needle: str) -> str:
    assert proc.stdout is not None
    for _ in range(200):
        line = proc.stdout.readline()
        if not line:
            break
        if needle in line:
            return line
    proc.kill()
    raise AssertionError(f"no {needle!r}: {proc.communicate(timeout=10)}")


def test_nodes_on_separate_hosts_deliver_across_them(
    net: tuple[Net, dict[str, str]], tmp_path: Path
) -> None:
    network, ns = net
    port = free_port()
    js = NatsServer(
        require_binary("nats-server"),
        tmp_path / "js",
        host=network.address(1),
        port=port,
    )
    js.start()
    storage = f"nats://{network.address(1)}:{port}?prefix=netns"
    procs: list[subprocess.Popen[str]] = []
    try:
        for ue in ("a", "b"):
            added = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "msgin5g",
                    "ue",
                    "add",
                    ue,
                    "--secret",
                    f"s-{ue}",
                    "--storage",
                    storage,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(),
                check=False,
            )
            assert added.returncode == 0, added.stderr
        for name, host in (("n1", 11), ("n2", 12)):
            node = in_ns(
                ns[name],
                "serve",
                "--storage",
                storage,
                "--coap",
                f"{network.address(host)}:5683",
                "--set",
                f"cluster.node_id={name}",
                "--set",
                "rest.enabled=false",
            )
            procs.append(node)
            wait_line(node, "serving MSGin5G-1")
        listener = in_ns(
            ns["ue"],
            "ue",
            "listen",
            "b",
            "--secret",
            "s-b",
            "--server",
            f"coap://{network.address(12)}:5683",
            "--count",
            "1",
            "--decode",
        )
        procs.append(listener)
        wait_line(listener, "registrationResult")
        sent = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns["ue"],
                sys.executable,
                "-m",
                "msgin5g",
                "ue",
                "send",
                "a",
                "--secret",
                "s-a",
                "--server",
                f"coap://{network.address(11)}:5683",
                "--to",
                "b",
                "--text",
                "across hosts",
                "--report",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        answers = [json.loads(line) for line in sent.stdout.splitlines() if line]
        assert answers[-1]["deliveryStatus"] == "REPT_DELY_SUCCESS", answers
        got = json.loads(wait_line(listener, "payloadText"))
        assert got["payloadText"] == "across hosts"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        js.stop()
