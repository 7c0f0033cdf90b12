"""SafeFormatter (no forged log lines) and LogThrottle (bounded log volume)."""

import asyncio
import importlib
import io
import logging
import sys
from collections.abc import Iterator

import pytest

from msgin5g.logsafe import (
    DEFAULT_FORMAT,
    LogThrottle,
    SafeFormatter,
    escape_controls,
    install,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(DEFAULT_FORMAT))
    logger = logging.getLogger("test.logsafe")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_escape_controls() -> None:
    assert escape_controls("plain text é €") == "plain text é €"
    assert escape_controls("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert (
        escape_controls("\x00\x1b[31m\x7f\x85\x9b") == "\\x00\\x1b[31m\\x7f\\x85\\x9b"
    )
    assert escape_controls("x\u2028y\u2029z") == "x\\u2028y\\u2029z"


def test_a_value_cannot_forge_a_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    ue = "a\n2026-01-01 00:00:00,000 INFO msgin5g: FORGED admin logged in\r\u2028X"
    logger.info("REG from %s refused", ue)
    logger.warning("%r and %s", "b\n", "c\x0bd\x0ce\x1cf\x85g")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert not any(line.startswith(("FORGED", "2026-01-01")) for line in lines)
    assert "a\\n2026-01-01 00:00:00,000 INFO msgin5g: FORGED" in lines[0]


def test_traceback_lines_are_indented_and_escaped(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("bad\nFORGED from the exception text\x1b")
    except ValueError:
        logger.exception("handler for %s raised", "x\ny")
    text = stream.getvalue()
    first, *rest = text.rstrip("\n").split("\n")
    assert first.endswith("handler for x\\ny raised")
    assert rest and all(line.startswith("    ") for line in rest)
    assert "Traceback" in rest[0]
    assert "\x1b" not in text
    # str.splitlines also breaks on \x1c-\x1e, \x85, \u2028/9: none are left
    assert len(text.splitlines()) == len(text.rstrip("\n").split("\n"))


def test_stack_info_is_indented(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("with stack", stack_info=True)
    _first, *rest = stream.getvalue().rstrip("\n").split("\n")
    assert rest and all(line.startswith("    ") for line in rest)


def test_install_puts_the_formatter_on_the_root_handlers() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    for handler in saved[0]:
        root.removeHandler(handler)
    try:
        install("info", DEFAULT_FORMAT)
        assert root.level == logging.INFO
        assert root.handlers
        assert all(isinstance(h.formatter, SafeFormatter) for h in root.handlers)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_serve_installs_the_safe_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = importlib.import_module("msgin5g.cli.main")
    seen: list[tuple[object, object]] = []
    monkeypatch.setattr(cli.logsafe, "install", lambda *a, **_: seen.append(a))
    monkeypatch.setattr(asyncio, "run", lambda coro: coro.close())
    monkeypatch.setattr(cli, "use_uvloop", lambda: False)
    monkeypatch.setattr(sys, "argv", ["msgin5g"])
    cli.main(["serve", "--storage", "memory:", "--coap", "127.0.0.1:0"])
    assert len(seen) == 1 and seen[0][1] == DEFAULT_FORMAT


def test_throttle_logs_a_burst_then_one_summary(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    clock = FakeClock()
    throttle = LogThrottle(logger, burst=3, interval=10.0, clock=clock)
    written = [
        throttle.log("malformed", logging.INFO, "bad datagram %d", i)
        for i in range(1000)
    ]
    assert written.count(True) == 3
    assert throttle.suppressed("malformed") == 997
    # another kind has its own budget
    assert throttle.log("refused", logging.INFO, "refused")
    clock.now = 10.0
    assert throttle.log("malformed", logging.INFO, "bad datagram again")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 + 1 + 2
    assert "suppressed 997 similar (malformed)" in lines[4]
    assert lines[5].endswith("bad datagram again")


def test_throttle_flush_and_disabled_level(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    throttle = LogThrottle(logger, burst=1, interval=60.0, clock=FakeClock())
    for _ in range(5):
        throttle.log("k", logging.WARNING, "w")
    throttle.flush()
    assert "suppressed 4 similar (k)" in stream.getvalue()
    logger.setLevel(logging.ERROR)
    assert not throttle.log("k", logging.INFO, "hidden")
