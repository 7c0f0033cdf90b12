"""``msgin5g ue import|export``: line validation, bad lines, --force, round trip.

The parsing tests feed :func:`read_lines` text streams; the command tests run
:func:`msgin5g.cli.main` on a real SQLite file in ``tmp_path``.
"""

import base64
import io
import json
import sys
from pathlib import Path

import pytest

from msgin5g.cli import main
from msgin5g.cli.ue_bulk import BadLine, Row, parse_digest, read_lines
from msgin5g.errors import ConfigError
from msgin5g.model.credentials import credential_digest, psk_token, verify_credential
from msgin5g.storage import open_backend

pytestmark = pytest.mark.timeout(60)


def _items(text: str, fmt: str | None = None) -> list[Row | BadLine]:
    return list(read_lines(io.StringIO(text, newline=""), fmt))


def _digest(secret: str, ue: str) -> bytes:
    return credential_digest(psk_token(secret, ue))


def test_csv_secrets_become_the_stored_digest() -> None:
    items = _items('ueServiceId,secret\nue-1,s1\n"ue,2","s,2"\n')
    assert items == [
        Row(2, "ue-1", _digest("s1", "ue-1")),
        Row(3, "ue,2", _digest("s,2", "ue,2")),
    ]


def test_csv_digest_column_takes_hex_and_base64() -> None:
    raw = bytes(range(32))
    text = (
        "ueServiceId,digest\n"
        f"a,{raw.hex()}\n"
        f"b,{base64.b64encode(raw).decode()}\n"
        f"c,{base64.urlsafe_b64encode(raw).decode()}\n"
        "d,abcd\n"
    )
    items = _items(text)
    assert items[:3] == [Row(2, "a", raw), Row(3, "b", raw), Row(4, "c", raw)]
    assert isinstance(items[3], BadLine) and items[3].line == 5
    assert "64 hex digits or base64" in items[3].reason


def test_each_bad_line_is_reported_with_its_number_and_the_good_ones_kept() -> None:
    text = (
        "ueServiceId,secret\n"  # 1
        "ok-1,s\n"  # 2
        "no-secret,\n"  # 3
        "bad/id,s\n"  # 4
        "\n"  # 5: blank, skipped
        "ok-1,other\n"  # 6: duplicate
        "three,fields,here\n"  # 7
        f"{'x' * 256},s\n"  # 8: ID too long
        "ctl\x07id,s\n"  # 9: control character
        "ok-2,s\n"  # 10
    )
    items = _items(text)
    good = [item for item in items if isinstance(item, Row)]
    bad = {item.line: item.reason for item in items if isinstance(item, BadLine)}
    assert [(row.line, row.ue_service_id) for row in good] == [
        (2, "ok-1"),
        (10, "ok-2"),
    ]
    assert sorted(bad) == [3, 4, 6, 7, 8, 9]
    assert bad[3] == "secret is missing or empty"
    assert bad[4].startswith("ueServiceId must be")
    assert bad[6] == "duplicate ueServiceId 'ok-1' (first on line 2)"
    assert bad[7] == "expected 2 fields (ueServiceId,secret), got 3"
    assert all("\x07" not in reason for reason in bad.values())


def test_jsonl_is_detected_and_validated() -> None:
    lines = [
        {"ueServiceId": "j1", "secret": "s1"},
        {"ueServiceId": "j2"},
        {"ueServiceId": "j3", "digest": "00" * 32, "extra": 1},
        {"ueServiceId": "j4", "digest": "11" * 32},
        {"ueServiceId": "j5", "secret": "s", "digest": "11" * 32},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    items = _items(text)
    assert items[0] == Row(1, "j1", _digest("s1", "j1"))
    assert items[3] == Row(4, "j4", bytes([0x11]) * 32)
    bad = {item.line: item.reason for item in items if isinstance(item, BadLine)}
    assert sorted(bad) == [2, 3, 5, 6]
    assert "unknown field extra" in bad[3]
    assert bad[5] == "give either secret or digest, not both"


def test_a_wrong_csv_header_stops_before_any_line() -> None:
    with pytest.raises(ConfigError, match="header must be"):
        _items("id,password\nue-1,s\n")
    with pytest.raises(ConfigError, match="header must be"):
        _items('{"ueServiceId": "x", "secret": "s"}\n', "csv")


def test_parse_digest_refuses_other_lengths() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        parse_digest("00" * 31)
    assert parse_digest(" " + "ab" * 32 + " ") == bytes([0xAB]) * 32


# ---------------------------------------------------------------- the commands


async def _stored(url: str) -> dict[str, bytes]:
    backend = open_backend(url)
    await backend.start()
    try:
        return dict(await backend.load_credentials())
    finally:
        await backend.aclose()


def _run(argv: list[str]) -> int:
    # main() calls asyncio.run: keep it off the test's event loop
    return main(argv)


def test_import_reports_bad_lines_and_refuses_existing_ids_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'm.db'}"
    first = tmp_path / "first.csv"
    first.write_text("ueServiceId,secret\nue-1,s1\nue-2,s2\nbad+id,s\n")
    assert _run(["ue", "import", str(first), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert "line 4: ueServiceId must be" in err
    assert "imported 2 UEs, 1 bad lines" in err

    again = tmp_path / "again.csv"
    again.write_text("ueServiceId,secret\nue-3,s3\nue-1,changed\n")
    assert _run(["ue", "import", str(again), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert (
        "line 3: ueServiceId 'ue-1' is already provisioned (--force replaces it)" in err
    )
    assert "imported 1 UEs, 1 bad lines" in err
    stored = asyncio.run(_stored(url))
    assert sorted(stored) == ["ue-1", "ue-2", "ue-3"]
    assert verify_credential(psk_token("s1", "ue-1"), stored["ue-1"])  # kept

    assert _run(["ue", "import", str(again), "--force", "--storage", url]) == 0
    assert "imported 2 UEs (2 replaced), 0 bad lines" in capsys.readouterr().err
    stored = asyncio.run(_stored(url))
    assert verify_credential(psk_token("changed", "ue-1"), stored["ue-1"])


def test_export_then_import_from_stdin_round_trips_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    lines = "".join(
        json.dumps({"ueServiceId": f"u{n}", "secret": f"s{n}"}) + "\n"
        for n in range(50)
    )
    (tmp_path / "ues.jsonl").write_text(lines)
    assert _run(["ue", "import", str(tmp_path / "ues.jsonl"), "--storage", source]) == 0
    capsys.readouterr()

    assert _run(["ue", "export", "--storage", source]) == 0
    exported = capsys.readouterr().out
    header, *rows = exported.splitlines()
    assert header == "ueServiceId,digest"
    assert len(rows) == 50
    assert all(len(row.split(",")[1]) == 64 for row in rows)
    assert "s1" not in exported  # never a secret

    stdin = io.TextIOWrapper(io.BytesIO(exported.encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert _run(["ue", "import", "-", "--storage", target]) == 0
    assert "imported 50 UEs, 0 bad lines" in capsys.readouterr().err
    assert asyncio.run(_stored(target)) == asyncio.run(_stored(source))

    out = tmp_path / "ues.out.jsonl"
    assert (
        _run(["ue", "export", str(out), "--format", "jsonl", "--storage", target]) == 0
    )
    first = json.loads(out.read_text().splitlines()[0])
    assert first["ueServiceId"] == "u0" and len(first["digest"]) == 64


def test_unreadable_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.csv"
    status = _run(["ue", "import", str(missing), "--storage", "memory:"])
    assert status == 1
    assert capsys.readouterr().err.startswith(f"msgin5g: cannot read {missing}")
