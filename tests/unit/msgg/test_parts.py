"""The Message Gateways' own parts: UE directory, outbox file, CLI refusals."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from msgin5g.errors import ConfigError
from msgin5g.msgg.l3g.directory import Directory
from msgin5g.msgg.outbox import Outbox


def test_directory_maps_both_ways_and_reads_its_file(tmp_path: Path) -> None:
    mapping = tmp_path / "ues.csv"
    mapping.write_text(
        "# Legacy UEs\nmeter-1,+491700000001\n\nmeter-2, 491700000002  # spare\n",
        encoding="utf-8",
    )
    directory = Directory()
    directory.load(mapping)
    directory.add("meter-3", "491700000003")
    assert directory.msisdn_of("meter-1") == "491700000001"
    assert directory.ue_of("+491700000002") == "meter-2"
    assert directory.ue_service_ids() == ["meter-1", "meter-2", "meter-3"]
    directory.add_number("5000=reply")
    directory.add_number("5001=as:billing")
    directory.add_number("+5002=ue:desk")
    assert directory.numbers == {
        "5000": None,
        "5001": ("AS", "billing"),
        "5002": ("UE", "desk"),
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("meter-1", "expected UE_SERVICE_ID,MSISDN"),
        ("meter-1,12ab", "is not an MSISDN"),
        (",491700000001", "empty UE Service ID"),
        ("meter-1,491700000001\nmeter-1,491700000009", "mapped twice"),
        ("meter-1,491700000001\nmeter-9,491700000001", "mapped twice"),
    ],
)
def test_directory_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    mapping = tmp_path / "ues.csv"
    mapping.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        Directory().load(mapping)


@pytest.mark.parametrize("spec", ["5000", "5000=elsewhere", "5000=ue:", "abc=reply"])
def test_bad_numbers_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        Directory().add_number(spec)


def test_outbox_keeps_rows_across_reopen_and_delays_them(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    first = box.put("sms", {"text": "a"})
    second = box.put("sms", {"text": "b"})
    box.put("uplink", {"path": "/x"})
    box.delay(first, time.time() + 3600)
    assert [r.body["text"] for r in box.ready("sms", exclude=set(), limit=10)] == ["b"]
    assert box.ready("sms", exclude={second}, limit=10) == []
    box.remember("reply:4917", {"addrType": "AS", "addr": "as1"}, ttl=60)
    box.remember("ack:dev:m1", {"msgId": "m1"}, ttl=-1)
    box.close()
    again = Outbox(path)
    assert again.count() == 3
    assert again.count("sms") == 2
    assert again.get(first) == {"text": "a"}
    assert again.recall("reply:4917") == {"addrType": "AS", "addr": "as1"}
    assert again.take_expired("ack:", time.time()) == [{"msgId": "m1"}]
    assert again.take_expired("ack:", time.time()) == []
    again.remove(second)
    assert again.get(second) is None
    assert again.recall("reply:4917", forget=True) is not None
    assert again.recall("reply:4917") is None
    again.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msgin5g", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("l3g",), "no UEs: give --ue ID=MSISDN or --ues-file"),
        (("l3g", "--ue", "x"), "expected ID=MSISDN"),
        (("l3g", "--ue", "x=1234", "--server", "coap://h"), "expected http(s)://"),
        (("l3g", "--ue", "x=1234", "--password", "123456789"), "at most 8"),
        (("n3g",), "no devices"),
        (("n3g", "--device", "a/b"), "no '/', '+' or '#'"),
        (("n3g", "--device", "a", "--broker", "http://x"), "expected mqtt://"),
        (("n3g", "--device", "a", "--uplink-to", "x"), "expected ue:ID or as:ID"),
    ],
)
def test_cli_refusals_are_one_line_and_a_hint(
    args: tuple[str, ...], message: str
) -> None:
    result = _cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert message in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr


def test_a_taken_listen_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            "l3g", "--ue", "x=1234", "--listen", f"127.0.0.1:{port}",
            "--outbox", str(tmp_path / "o.db"),
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr.splitlines()[0]
