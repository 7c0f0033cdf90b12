"""kill -9 with messages in flight, restart, resend: each message stored once.

Issue 10 item 2: senders that got no answer resend with the same messageId (RFC
7252, digest §3.7.5); before the fix every message that was stored but not
answered was stored and delivered twice. Now the (originator, messageId) record
is committed with the message, so the resend gets the first answer and nothing
is stored twice. Real processes and sockets on loopback, bounded in count.
"""

import asyncio
import uuid
from collections import Counter

import pytest

from msgin5g.client import Client
from tests.e2e.conftest import ServerProcess, stored_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

N = 300


async def test_resend_after_kill_9_stores_and_delivers_each_message_once(
    server: ServerProcess,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(N)]
    answered: dict[int, str] = {}
    async with Client("ue1", "s1", server=server.url, bind=("127.0.0.1", 0)) as ue1:
        await ue1.register()

        async def send(i: int) -> None:
            resp = await ue1.send("ue2", f"m{i}".encode(), message_id=ids[i])
            answered[i] = resp.delivery_status

        tasks = [asyncio.create_task(send(i)) for i in range(N)]
        for _ in range(2000):  # kill with most of them in flight
            if len(answered) >= N // 4:
                break
            await asyncio.sleep(0.005)
        server.kill9()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert 0 < len(answered) < N, "the kill must come while messages are in flight"
    assert set(answered.values()) == {"DELY_STORED"}  # ue2 is offline
    before, records = stored_rows(server)
    assert before == records  # every stored message has its record, and only those
    assert before >= len(answered)

    server.start()
    async with Client("ue1", "s1", server=server.url, bind=("127.0.0.1", 0)) as ue1:
        await ue1.register()
        again = await asyncio.gather(
            *(ue1.send("ue2", f"m{i}".encode(), message_id=ids[i]) for i in range(N))
        )
    assert {r.delivery_status for r in again} == {"DELY_STORED"}
    assert stored_rows(server) == (N, N)

    received: list[str] = []
    async with Client("ue2", "s2", server=server.url, bind=("127.0.0.1", 0)) as ue2:
        await ue2.register()
        while True:
            try:
                got = await ue2.receive(timeout=3.0 if len(received) < N else 1.5)
            except TimeoutError:
                break
            received.append(got.item.message_id)
    counts = Counter(received)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [m for m, c in counts.items() if c > 1][:5]
