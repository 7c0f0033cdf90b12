"""End to end with real processes on loopback: `msgin5g serve` and the CLI."""

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import ServerProcess, msgin5g, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Rest of a process's output after ``listen`` read its first line.

    ``communicate()`` would read the pipe directly and lose what ``readline()``
    already buffered (the delivered message often arrives in the same read).
    """
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.wait(timeout)
    with proc.stdout, proc.stderr:
        return proc.stdout.read(), proc.stderr.read()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def listen(
    server: ServerProcess, ue: str, secret: str, *extra: str
) -> subprocess.Popen[str]:
    proc = spawn(
        "ue",
        "listen",
        ue,
        "--secret",
        secret,
        "--server",
        server.url,
        "--bind",
        "127.0.0.1:0",
        *extra,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # REGRESP once registered
    assert first["registrationResult"] == "SUCCESS", first
    return proc


def send(
    server: ServerProcess, *args: str, check: bool = True
) -> list[dict[str, object]]:
    result = msgin5g(
        "ue",
        "send",
        "ue1",
        "--secret",
        "s1",
        "--server",
        server.url,
        "--bind",
        "127.0.0.1:0",
        *args,
        check=check,
    )
    return lines(result.stdout)


def test_two_ues_message_and_report(server: ServerProcess) -> None:
    receiver = listen(server, "ue2", "s2", "--count", "1", "--decode")
    out = send(server, "--to", "ue2", "--text", "hello ue2", "--report")
    _regresp, msgresp, imdn = out
    assert msgresp["deliveryStatus"] == "DELY_ACCEPTED"
    assert imdn["messageType"] == "IMDN"
    assert imdn["deliveryStatus"] == "REPT_DELY_SUCCESS"
    assert imdn["messageId"] == msgresp["messageId"]
    stdout, _ = finish(receiver, 20)
    [msg] = lines(stdout)
    assert msg["messageType"] == "MSG" and msg["payloadText"] == "hello ue2"
    assert msg["originatingUeServiceId"] == "ue1"


def test_offline_recipient_stored_then_delivered(server: ServerProcess) -> None:
    out = send(server, "--to", "ue2", "--text", "stored for later")
    assert out[1]["deliveryStatus"] == "DELY_STORED"
    receiver = listen(server, "ue2", "s2", "--count", "1", "--decode")
    stdout, stderr = finish(receiver, 20)
    got = lines(stdout)
    assert got, (stdout, stderr, receiver.returncode)
    assert got[0]["payloadText"] == "stored for later"


def test_sigkill_after_acknowledgement_loses_nothing(server: ServerProcess) -> None:
    sent = []
    for i in range(5):
        out = send(server, "--to", "ue2", "--text", f"m{i}")
        assert out[1]["deliveryStatus"] == "DELY_STORED"
        sent.append(f"m{i}")
    server.kill9()
    server.start()
    receiver = listen(server, "ue2", "s2", "--count", "5", "--decode")
    stdout, _ = finish(receiver, 30)
    assert [m["payloadText"] for m in lines(stdout)] == sent


def test_expiry_produces_failure_report(server: ServerProcess) -> None:
    # --store-for counts from when the sender has started and registered, just
    # before the MSG goes out: the window holds no process start-up, so a
    # loaded machine cannot expire the message before the server stores it
    start = time.monotonic()
    out = send(
        server,
        "--to",
        "ue2",
        "--text",
        "too late",
        "--report",
        "--store-for",
        "2",
        "--wait",
        "20",
    )
    msgresp, imdn = out[1], out[2]
    assert msgresp["deliveryStatus"] == "DELY_STORED"
    assert imdn["deliveryStatus"] == "REPT_DELY_FAILED"
    assert imdn["failureCause"] == "MESSAGE_EXPIRED"
    assert imdn["originatingUeServiceId"] == "ue2"
    assert time.monotonic() - start >= 2.0  # not before the expiry
    receiver = listen(server, "ue2", "s2", "--timeout", "1.5")
    stdout, _ = finish(receiver, 20)
    assert lines(stdout) == []


def test_store_until_in_the_past_is_not_stored(server: ServerProcess) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    out = send(
        server,
        "--to",
        "ue2",
        "--text",
        "already late",
        "--store-until",
        past.replace("+00:00", "Z"),
        check=False,
    )
    assert out[1]["deliveryStatus"] != "DELY_STORED", out
    receiver = listen(server, "ue2", "s2", "--timeout", "1.5")
    stdout, _ = finish(receiver, 20)
    assert lines(stdout) == []


def test_unknown_recipient_and_bad_secret(server: ServerProcess) -> None:
    result = msgin5g(
        "ue",
        "send",
        "ue1",
        "--secret",
        "s1",
        "--server",
        server.url,
        "--to",
        "nobody",
        "--text",
        "x",
        check=False,
    )
    assert result.returncode == 1
    assert lines(result.stdout)[1]["failureCause"] == "RECIPIENT_UNKNOWN"
    bad = msgin5g(
        "ue", "register", "ue1", "--secret", "nope", "--server", server.url, check=False
    )
    assert bad.returncode == 1
    assert "AUTHENTICATION_FAILED" in bad.stderr


def test_provisioning_commands(server: ServerProcess) -> None:
    added = msgin5g("ue", "add", "ue3", "--storage", server.storage)
    assert "secret (shown once):" in added.stdout
    secret = added.stdout.strip().rsplit(" ", 1)[1]
    reg = msgin5g("ue", "register", "ue3", "--secret", secret, "--server", server.url)
    assert lines(reg.stdout)[0]["registrationResult"] == "SUCCESS"
    listing = msgin5g("ue", "list", "--storage", server.storage).stdout
    assert "ue3\tregistered" in listing and "ue2\tnot registered" in listing
    assert (
        "removed ue3"
        in msgin5g("ue", "remove", "ue3", "--storage", server.storage).stdout
    )
    assert (
        msgin5g(
            "ue", "remove", "ue3", "--storage", server.storage, check=False
        ).returncode
        == 1
    )


def test_topic_publication_via_cli(server: ServerProcess) -> None:
    receiver = listen(
        server, "ue2", "s2", "--topic", "alerts", "--count", "1", "--decode"
    )
    assert receiver.stdout is not None
    subresp = json.loads(receiver.stdout.readline())
    assert subresp["messageType"] == "TOPICSUBRESP"
    out = send(server, "--topic", "alerts", "--text", "storm")
    assert out[1]["deliveryStatus"] == "DELY_ACCEPTED"
    stdout, _ = finish(receiver, 20)
    [msg] = lines(stdout)
    assert msg["messagingTopic"] == "alerts" and msg["payloadText"] == "storm"


def test_group_message_via_cli(server: ServerProcess) -> None:
    created = msgin5g(
        "group", "create", "pair", "ue1", "ue2", "--storage", server.storage
    )
    assert json.loads(created.stdout) == {"groupId": "pair", "members": ["ue1", "ue2"]}
    assert (
        "pair\t2 members"
        in msgin5g("group", "list", "--storage", server.storage).stdout
    )
    receiver = listen(server, "ue2", "s2", "--count", "1", "--decode")
    out = send(server, "--group", "pair", "--text", "to all")
    assert out[1]["deliveryStatus"] == "DELY_ACCEPTED"
    stdout, _ = finish(receiver, 20)
    [msg] = lines(stdout)
    assert msg["recipientGroupServiceId"] == "pair" and msg["payloadText"] == "to all"


def test_area_broadcast_via_cli(server: ServerProcess) -> None:
    msgin5g(
        "area", "create", "yard", "--cell", "c-7", "--ue-may-send",
        "--storage", server.storage,
    )  # fmt: skip
    receiver = listen(server, "ue2", "s2", "--count", "1", "--decode", "--cell", "c-7")
    out = send(server, "--area", "yard", "--text", "siren test")
    assert out[1]["deliveryStatus"] == "DELY_ACCEPTED"
    stdout, _ = finish(receiver, 20)
    [msg] = lines(stdout)
    assert msg["recipientUeServiceId"] == "ue2" and msg["payloadText"] == "siren test"
    refused = send(server, "--area", "nowhere", "--text", "x", check=False)
    assert refused[1]["failureCause"] == "RECIPIENT_UNKNOWN"


def test_sigkill_after_group_acknowledgement_loses_no_copy(
    server: ServerProcess,
) -> None:
    msgin5g("group", "create", "crew", "ue1", "ue2", "--storage", server.storage)
    sent = []
    for i in range(3):  # ue2 is offline: its copies are stored (one payload each)
        out = send(server, "--group", "crew", "--text", f"g{i}")
        assert out[1]["deliveryStatus"] == "DELY_ACCEPTED"
        sent.append(f"g{i}")
    server.kill9()
    server.start()
    receiver = listen(server, "ue2", "s2", "--count", "3", "--decode")
    stdout, _ = finish(receiver, 30)
    got = lines(stdout)
    assert [m["payloadText"] for m in got] == sent
    assert {m["recipientGroupServiceId"] for m in got} == {"crew"}
    again = listen(server, "ue2", "s2", "--timeout", "1.5")  # nothing twice
    stdout, _ = finish(again, 20)
    assert lines(stdout) == []
