"""Progress of long CLI jobs, and ``group import`` / ``area import`` on a real SQLite file."""

import asyncio
import io
import json
from pathlib import Path

import pytest

from msgin5g.cli import main
from msgin5g.cli.doc_import import GroupLine, read_jsonl
from msgin5g.cli.progress import Progress
from msgin5g.config import DeliveryConfig
from msgin5g.runtime import SystemClock
from msgin5g.service.broadcast import BroadcastRegistry
from msgin5g.service.groups import GroupRegistry
from msgin5g.storage import open_backend

pytestmark = pytest.mark.timeout(60)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_quiet_off_a_terminal_unless_forced() -> None:
    quiet = io.StringIO()
    progress = Progress("import", total=100, stream=quiet)
    progress.update(10, force=True)
    progress.finish(100)
    assert quiet.getvalue() == ""

    forced = io.StringIO()
    clock = [0.0]
    progress = Progress(
        "import", total=100, forced=True, stream=forced, clock=lambda: clock[0]
    )
    clock[0] = 2.0
    progress.update(50)
    clock[0] = 2.5
    progress.update(60)  # within a second of the last line: not drawn
    clock[0] = 4.0
    progress.finish(100)
    lines = forced.getvalue().splitlines()
    assert lines == [
        "import [###############---------------] 50/100 lines (25/s)",
        "import [##############################] 100/100 lines (25/s)",
    ]


def test_progress_on_a_terminal_redraws_one_line_like_the_segments_bar() -> None:
    tty = Tty()
    clock = [0.0]
    progress = Progress("groups", total=1000, stream=tty, clock=lambda: clock[0])
    clock[0] = 1.0
    progress.update(10, 250)
    progress.interrupt()
    clock[0] = 2.0
    progress.finish(20, 1000)
    out = tty.getvalue()
    assert out.startswith("\rgroups [#######-----------------------] 10 lines (10/s)")
    assert "\r\x1b[K" in out  # cleared for a message in between
    assert out.endswith(
        "groups [##############################] 20 lines (10/s)\x1b[K\n"
    )


def test_read_jsonl_reports_bad_lines_with_numbers() -> None:
    text = (
        b'\xef\xbb\xbf{"groupId": "g1", "members": ["a"]}\n'
        b"\n"
        b"not json\n"
        b'{"groupId": "g1"}\n'
        b'{"groupId": "x/y"}\n'
        b'{"groupId": "g2", "members": "a"}\n'
    )
    rows = list(read_jsonl(io.BytesIO(text), GroupLine, lambda g: g.group_id))
    assert rows[0] == (1, GroupLine("g1", ["a"]))
    assert rows[1] == (3, "not a JSON object")
    assert rows[2] == (4, "duplicate ID 'g1' (first on line 1)")
    assert rows[3][0] == 5 and "groupId" in str(rows[3][1])
    assert rows[4][0] == 6 and "members" in str(rows[4][1])


async def _stored(url: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    backend = open_backend(url)
    await backend.start()
    try:
        groups = GroupRegistry(backend, SystemClock(), DeliveryConfig())
        areas = BroadcastRegistry(backend, SystemClock(), DeliveryConfig())
        return (
            {d.group_id: list(d.members) for d in await groups.documents()},
            {a.area_id: a.cells for a in await areas.all()},
        )
    finally:
        await backend.aclose()


def test_group_and_area_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    groups = tmp_path / "groups.jsonl"
    groups.write_text(
        "".join(
            json.dumps({"groupId": f"g{n}", "members": [f"ue{n}", f"ue{n + 1}"]}) + "\n"
            for n in range(40)
        )
        + '{"groupId": "g3"}\n'
    )
    assert main(["group", "import", str(groups), "--storage", url, "--progress"]) == 1
    err = capsys.readouterr().err
    assert "line 41: duplicate ID 'g3' (first on line 4)" in err
    assert "groups [##############################] 40 lines" in err
    assert "imported 40 groups, 1 bad lines" in err

    areas = tmp_path / "areas.jsonl"
    areas.write_text(
        '{"areaId": "a1", "cells": ["c1", "c1"], "ueMaySend": true}\n'
        '{"areaId": "a2", "trackingAreas": ["t1"]}\n'
    )
    assert main(["area", "import", str(areas), "--storage", url]) == 0
    err = capsys.readouterr().err
    assert "imported 2 areas, 0 bad lines" in err
    assert "[" not in err  # no progress off a terminal without --progress

    stored_groups, stored_areas = asyncio.run(_stored(url))
    assert len(stored_groups) == 40
    assert stored_groups["g7"] == ["ue7", "ue8"]
    assert stored_areas == {"a1": ["c1"], "a2": []}

    # a second import replaces the members (like group create)
    again = tmp_path / "again.jsonl"
    again.write_text('{"groupId": "g7", "members": ["x"]}\n')
    assert main(["group", "import", str(again), "--storage", url]) == 0
    assert asyncio.run(_stored(url))[0]["g7"] == ["x"]


def test_missing_import_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["area", "import", str(missing), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"msgin5g: cannot read {missing}")
    assert "Traceback" not in err


def test_ue_import_shows_progress_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    ues = tmp_path / "ues.csv"
    ues.write_text("ueServiceId,secret\n" + "".join(f"ue{n},s{n}\n" for n in range(30)))
    assert main(["ue", "import", str(ues), "--storage", url]) == 0
    assert "import [" not in capsys.readouterr().err
    more = tmp_path / "more.csv"
    more.write_text("ueServiceId,secret\n" + "".join(f"x{n},s{n}\n" for n in range(30)))
    assert main(["ue", "import", str(more), "--storage", url, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "import [##############################] 30 lines" in err
    assert "imported 30 UEs, 0 bad lines" in err
