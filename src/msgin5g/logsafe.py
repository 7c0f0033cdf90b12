"""Log hygiene: no value can forge a log line, and no fault can flood the log.

Three tools, all used at the edges (issue 10 items 5 and 11, issue 17 item 3):

* :class:`SafeFormatter` escapes control characters in the final text of every
  record the command-line programs write (``msgin5g serve``, ``gateway`` and the
  device commands install it through :func:`install`). A UE Service ID such as
  ``"a\\nFORGED ..."`` comes out as ``a\\nFORGED ...`` on one line. The message
  part is escaped completely (C0 controls, DEL, C1 controls, U+2028/U+2029, and
  the other Unicode line separators that :meth:`str.splitlines` honours); in a
  traceback or stack dump the newlines are kept but every continuation line is
  indented, so a line of the log that starts at column 0 is always the start of
  a record. The identifiers are also refused at decode
  (:mod:`msgin5g.model.messages`); this is the second belt.
* :class:`JsonFormatter` (``--log-format json``) writes one JSON object per
  record and per line: ``ts``, ``level``, ``logger``, ``event`` (the record's
  ``event`` extra, else its message template, stable across values),
  ``message`` (rendered) and, when the call gave them as ``extra``, the fields
  ``ue_service_id``, ``message_id``, ``cause``, ``peer``, ``message_type``,
  ``as_service_id``, ``count``. ``json.dumps`` with ``ensure_ascii`` escapes every
  control and non-ASCII character, so a record is always exactly one line. No
  secrets: only those named fields are copied, and an extra whose name contains
  ``secret``, ``token``, ``credential`` or ``password`` is never written.
* :class:`LogThrottle` logs a repeated fault of one *kind* (malformed datagram,
  refused registration, a source over its rate limit ...) at most ``burst``
  times per ``interval`` seconds; what it holds back is counted and reported in
  one line ``"... suppressed K similar"`` when the next interval begins. A flood
  of hostile datagrams then costs a bounded number of log lines per minute
  instead of one per datagram (issue 10 item 11: 377 MB of INFO log in 150 s).

The module depends on nothing but the standard library, so every layer (the
CoAP engine included) may use it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

__all__ = [
    "JsonFormatter",
    "LogThrottle",
    "SafeFormatter",
    "escape_controls",
    "install",
]

_ESCAPES: dict[int, str] = {}
for _code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029):
    _ESCAPES[_code] = f"\\x{_code:02x}" if _code < 0x100 else f"\\u{_code:04x}"
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})
# Also line boundaries for str.splitlines(): VT, FF, FS, GS, RS, NEL are in
# the ranges above; U+2028/U+2029 are added explicitly.
_KEEP_NEWLINE = dict(_ESCAPES)
del _KEEP_NEWLINE[0x0A]
del _KEEP_NEWLINE[0x09]

_CONTINUATION = "\n    "


def escape_controls(text: str) -> str:
    """Return ``text`` with every control or line-separator character escaped.

    ``"\\n"`` becomes the two characters ``\\n``; other C0/C1 controls, DEL and
    U+2028/U+2029 become ``\\xNN`` / ``\\uNNNN``. Printable text is unchanged.
    """
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)


def _keep_lines(text: str) -> str:
    """Escape the controls in ``text`` except newlines (and tabs)."""
    if text.isprintable():
        return text
    return text.translate(_KEEP_NEWLINE)


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output never contains a forged line.

    The formatted message (``%(message)s`` after %-interpolation of the
    arguments) has all control characters escaped; exception and stack text
    keep their line structure with continuation lines indented by four spaces.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Format the record's own text with the message escaped."""
        message = record.message
        safe = escape_controls(message)
        if safe is message:
            return super().formatMessage(record)
        record.message = safe
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        """Format a traceback with controls escaped and continuation lines indented."""
        return _keep_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """Format stack information like :meth:`formatException`."""
        return _keep_lines(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; any line after the first is indented."""
        text = super().format(record)
        if "\n" not in text:
            return text
        return text.replace("\n", _CONTINUATION)


DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The line format of ``msgin5g serve``."""

JSON_FIELDS = (
    "ue_service_id",
    "message_id",
    "cause",
    "peer",
    "message_type",
    "as_service_id",
    "count",
)
"""The ``extra`` fields a JSON log line carries when a call gives them."""

_SECRET_WORDS = ("secret", "token", "credential", "password")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as a single-line JSON object."""
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or str(record.msg),
            "message": message,
        }
        for name in JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None and not _secretive(name):
                out[name] = value if isinstance(value, int | float) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


def _secretive(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def install(
    level: str | int, fmt: str | None = None, *, json_lines: bool = False
) -> None:
    """Configure the root logger like :func:`logging.basicConfig`, with :class:`SafeFormatter`.

    Args:
        level: the root level (name or number).
        fmt: the line format (default: the standard ``logging`` one).
        json_lines: write :class:`JsonFormatter` lines instead (``fmt`` unused).
    """
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level)
    formatter: logging.Formatter = JsonFormatter() if json_lines else SafeFormatter(fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


class LogThrottle:
    """Rate-limited logging of repeated faults, per kind.

    Args:
        logger: where the lines go.
        burst: lines of one kind logged per interval before suppression.
        interval: the interval length in seconds.
        clock: monotonic seconds (injectable for tests).

    The state is one small entry per *kind*; kinds are a fixed vocabulary
    chosen by the caller (never a peer address), so it stays bounded.
    """

    __slots__ = ("_burst", "_clock", "_interval", "_kinds", "_logger")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        # kind -> [interval start, lines logged, lines suppressed, level]
        self._kinds: dict[str, list[float]] = {}

    def log(
        self,
        kind: str,
        level: int,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        """Log ``msg % args`` at ``level`` unless ``kind`` is over its budget.

        ``extra`` is passed to the logger (structured fields, :data:`JSON_FIELDS`).

        Returns:
            True if the line was written (or would have been, had ``level``
            been enabled), False if it was suppressed.
        """
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = [now, 0.0, 0.0, float(level)]
        elif now - entry[0] >= self._interval:
            self._summarise(kind, entry)
            entry[0], entry[1], entry[2] = now, 0.0, 0.0
        if entry[1] >= self._burst:
            entry[2] += 1
            return False
        entry[1] += 1
        self._logger.log(level, msg, *args, extra=extra)
        return True

    def flush(self) -> None:
        """Write the pending "suppressed" summaries now (e.g. at shutdown)."""
        for kind, entry in self._kinds.items():
            self._summarise(kind, entry)
            entry[2] = 0.0

    def suppressed(self, kind: str) -> int:
        """How many lines of ``kind`` are held back in the current interval."""
        entry = self._kinds.get(kind)
        return 0 if entry is None else int(entry[2])

    def _summarise(self, kind: str, entry: list[float]) -> None:
        count = int(entry[2])
        if count:
            self._logger.log(
                int(entry[3]),
                "... suppressed %d similar (%s) in %g s",
                count,
                kind,
                self._interval,
            )
