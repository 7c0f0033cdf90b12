"""SQLite: the writes of one event-loop pass reach the writer as one list, in order."""

import asyncio
from pathlib import Path
from typing import Any

from msgin5g.model.registry import Contact, UERegistration
from msgin5g.storage.sqlite import SqliteBackend


def _reg(ue: str, port: int) -> UERegistration:
    return UERegistration(
        ue, Contact("192.0.2.1", port), Contact("192.0.2.1", port), 0.0
    )


async def test_a_burst_of_writes_is_one_queue_put_and_keeps_order(
    tmp_path: Path,
) -> None:
    backend = SqliteBackend(str(tmp_path / "b.db"))
    await backend.start()
    puts: list[Any] = []
    put = backend._put

    def counting(item: Any) -> None:
        puts.append(item)
        put(item)

    backend._put = counting
    try:
        writes = [backend.put_registration(_reg(f"ue-{n}", n)) for n in range(100)]
        writes.append(backend.delete_registration("ue-5"))  # after its put
        writes.append(backend.put_registration(_reg("ue-7", 9999)))
        results = await asyncio.gather(*writes)
        assert results[100] is True
        assert len(puts) == 1 and isinstance(puts[0], list) and len(puts[0]) == 102
        loaded = {r.ue_service_id: r for r in await backend.load_registrations()}
        assert "ue-5" not in loaded and len(loaded) == 99
        assert loaded["ue-7"].source.port == 9999
    finally:
        await backend.aclose()
    reopened = SqliteBackend(str(tmp_path / "b.db"))
    await reopened.start()
    try:
        assert len(await reopened.load_registrations()) == 99  # committed before aclose
    finally:
        await reopened.aclose()
