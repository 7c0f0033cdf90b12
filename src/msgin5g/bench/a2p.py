"""``a2p`` load and the REST set-up calls (AS registration, the bench group).

:class:`A2pWorker` hosts its slice of the UEs (registered, counting what they
receive, like :class:`~msgin5g.bench.load.P2pWorker`) and ``--connections``
HTTP/1.1 keep-alive connections (or, with ``--h2c``, one h2c connection with
that many streams), each posting ``MSGS_MSGDelivery`` ``deliver-as-message``
requests (TS 29.538 §6.1) for the UEs round-robin over all processes. A
message counts when its UE received it; its latency is receipt minus the time
the POST was written. A 429/503 answer is a refusal and its ``Retry-After``
delays that connection (at most 50 ms).

:func:`register_as` and :func:`ensure_group` run once, in the coordinator,
before the load: ``POST /msgs-asregistration/v1/registrations`` and the
SS_GroupManagement API ``POST /ss-gm/v1/group-documents`` (``PUT`` when the
group exists), so the group the ``fanout`` mode sends to holds exactly the
bench UEs.
"""

import asyncio
import base64
import json
import time
import urllib.parse
from typing import Final

from msgin5g.bench.http import H1Connection, H2Connection, open_connection
from msgin5g.bench.load import Worker
from msgin5g.bench.options import BenchFailed, BenchOptions, parse_http_url
from msgin5g.bench.peer import stamp
from msgin5g.bench.stats import refusal_cause
from msgin5g.errors import ConfigError

__all__ = ["AS_PATH", "A2pWorker", "ensure_group", "register_as"]

AS_PATH: Final = "/msgs-msgdelivery/v1/deliver-as-message"
_AS_REGISTRATION: Final = "/msgs-asregistration/v1/registrations"
_GROUPS: Final = "/ss-gm/v1/group-documents"
_BACKOFF_MAX: Final = 0.05
_LATE: Final = 0.005
"""A paced slot more than this late (s) is skipped and counted ``behind``."""


def _rest(options: BenchOptions) -> tuple[str, int]:
    """The REST API's address (``--http``).

    Raises:
        ConfigError: no ``--http`` was given.
    """
    if options.http is None:
        raise ConfigError(f"{options.mode} needs --http URL (the server's REST API)")
    return parse_http_url(options.http)


def _refusal(status: int, body: bytes) -> str:
    return f"HTTP {status} {body[:300].decode('utf-8', 'replace')}".strip()


async def register_as(options: BenchOptions) -> None:
    """Register ``options.as_id`` (MSGS_ASRegistration).

    Raises:
        BenchFailed: the server refused it.
        ServerUnreachable: no HTTP server at ``--http``.
    """
    host, port = _rest(options)
    conn = await open_connection(host, port, token=options.token)
    try:
        body = json.dumps({"asSvcId": options.as_id}).encode()
        answer = await conn.request("POST", _AS_REGISTRATION, body)
    finally:
        await conn.aclose()
    if answer.status == 403 and b"AS_ALREADY_REGISTERED" in answer.body:
        return  # an earlier run registered it: the state this run needs
    if answer.status not in (200, 201):
        raise BenchFailed(
            f"the AS registration of {options.as_id} was refused: "
            f"{_refusal(answer.status, answer.body)}",
            "with OAuth2 on, give --token (a token with the msgs-asregistration "
            "and msgs-msgdelivery scopes)",
        )


async def ensure_group(options: BenchOptions) -> None:
    """Make ``options.group`` hold exactly the bench UEs (SS_GroupManagement).

    Raises:
        BenchFailed: the server refused both the creation and the replacement.
        ServerUnreachable: no HTTP server at ``--http``.
    """
    host, port = _rest(options)
    document = json.dumps(
        {
            "valGroupId": options.group,
            "members": [{"valUserId": name} for name in options.names()],
        },
        separators=(",", ":"),
    ).encode()
    conn = await open_connection(host, port, token=options.token)
    try:
        answer = await conn.request("POST", _GROUPS, document)
        if answer.status == 403 and b"GROUP_ALREADY_EXISTS" in answer.body:
            path = f"{_GROUPS}/{urllib.parse.quote(options.group, safe='')}"
            answer = await conn.request("PUT", path, document)
    finally:
        await conn.aclose()
    if answer.status not in (200, 201):
        raise BenchFailed(
            f"creating the group {options.group} was refused: "
            f"{_refusal(answer.status, answer.body)}",
            "with OAuth2 on, give --token (an operator token, or one with the "
            "ss-gm scope)",
        )


class A2pWorker(Worker):
    """Receiving UEs plus HTTP connections posting deliver-as-message."""

    async def setup(self) -> None:
        mine = self.names[self.index :: self.options.workers]
        ues = await self.open_ues(mine)
        await self.register(ues, mine)
        host, port = _rest(self.options)
        count = 1 if self.options.h2c else self.options.connections
        self.conns: list[H1Connection | H2Connection] = [
            await open_connection(
                host, port, token=self.options.token, h2c=self.options.h2c
            )
            for _ in range(count)
        ]
        self._serial = 0
        self._prefix = (
            f'{{"oriAddr":{{"addrType":"AS","addr":"{self.options.as_id}"}},'
            f'"stoAndFwInd":{"true" if self.options.store else "false"},'
            f'"msgId":"{self.options.as_id}-{self.run_id}-{self.index}-'
        ).encode()

    def body(self, at: float) -> bytes:
        self._serial += 1
        ue = self.names[
            (self._serial * self.options.workers + self.index) % len(self.names)
        ]
        payload = base64.b64encode(stamp(self.options.size, at))
        return (
            self._prefix
            + b'%d","destAddr":{"addrType":"UE","addr":"%s"},"payload":"%s"}'
            % (
                self._serial,
                ue.encode(),
                payload,
            )
        )

    async def _post(self, conn: H1Connection | H2Connection) -> None:
        sent_at = time.perf_counter()
        counted = self.t0 <= sent_at < self.t_end
        if counted:
            self.counts.sent += 1
        answer = await conn.request("POST", AS_PATH, self.body(sent_at))
        if counted:
            self.counts.answer.add(time.perf_counter() - sent_at)
        if answer.status == 200:
            if counted:
                self.counts.accepted += 1
            return
        if counted:
            self.counts.refuse(refusal_cause(f"HTTP {answer.status}", answer.body))
        await asyncio.sleep(min(answer.retry_after, _BACKOFF_MAX) or 0.001)

    async def _closed(self, conn: H1Connection | H2Connection) -> None:
        while time.perf_counter() < self.t_end:
            await self._post(conn)

    async def _paced(self, conn: H1Connection | H2Connection, slots: list[int]) -> None:
        rate = self.options.rate / self.options.workers
        start = self._start
        while True:
            slots[0] += 1
            due = start + slots[0] / rate
            if due >= self.t_end:
                return
            now = time.perf_counter()
            if now - due > _LATE:
                if now >= self.t0:
                    self.counts.behind += 1
                continue
            await asyncio.sleep(max(0.0, due - now))
            await self._post(conn)

    async def load(self) -> None:
        lanes = [
            conn
            for conn in self.conns
            for _ in range(
                self.options.connections * self.options.window
                if isinstance(conn, H2Connection)
                else 1
            )
        ]
        self._start = time.perf_counter()
        slots = [0]
        try:
            if self.options.rate:
                await asyncio.gather(*(self._paced(conn, slots) for conn in lanes))
            else:
                await asyncio.gather(*(self._closed(conn) for conn in lanes))
        finally:
            for conn in self.conns:
                await conn.aclose()
