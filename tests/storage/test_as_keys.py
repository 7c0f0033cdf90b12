"""AS mailbox keys (``as/<AS Service ID>``) work on every backend without schema change."""

from msgin5g.model.application import ASRegistration, as_key, as_of_key
from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.storage import Backend


def test_key_helpers() -> None:
    assert as_key("meter") == "as/meter"
    assert as_of_key("as/meter") == "meter"
    assert as_of_key("ue1") is None


async def test_as_mailbox_items_and_routes_round_trip(backend: Backend) -> None:
    p2a = Msg(
        message_id="m", originating_ue_service_id="ue1", recipient_as_service_id="a"
    )
    report = Imdn(
        message_id="x",
        delivery_status="REPT_DELY_SUCCESS",  # type: ignore[arg-type]
        originating_ue_service_id="ue1",
        recipient_as_service_id="a",
    )
    for item in (p2a, report):
        await backend.enqueue(
            QueuedItem(
                recipient="as/a", item=item, priority=1, expires_at=9e9, store=True
            )
        )
    pending = await backend.pending_for("as/a")
    assert [q.item for q in pending] == [p2a, report]
    assert "as/a" in await backend.recipients_with_pending()
    route = ReportRoute(
        message_id="m", reporter="ue1", originator="as/a", expires_at=9e9
    )
    await backend.put_report_route(route)
    assert await backend.take_report_route("m", "ue1") == route


async def test_as_registration_record(backend: Backend) -> None:
    reg = ASRegistration(
        registration_id="r1",
        as_service_id="a",
        registered_at=1.0,
        target_uri="http://x",
        owner="a",
    )
    await backend.put_record("as-registration", "a", reg)
    assert await backend.load_records("as-registration", ASRegistration) == [reg]
