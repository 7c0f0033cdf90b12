"""GroupRegistry: VAL group documents in the record store, cache, valUeId mapping."""

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import InvalidRequest, NotAuthorized, RecipientUnreachable
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.service.groups import Group, GroupDocument, GroupRegistry, ValTarget
from msgin5g.spec.causes import FailureCause
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend
from msgin5g.testing import ManualClock

TTL = 5.0


class LegacyGroup(msgspec.Struct, frozen=True):
    """The record ``msgin5g group`` wrote before the SEAL API."""

    group_id: str
    members: list[str] = []


@pytest.fixture(params=["memory", "sqlite"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    url = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'g.db'}"
    opened = open_backend(url)
    await opened.start()
    yield opened
    await opened.aclose()


def registry(backend: Backend, clock: ManualClock) -> GroupRegistry:
    return GroupRegistry(backend, clock, DeliveryConfig(group_cache_ttl=TTL))


async def test_legacy_records_read_as_documents(backend: Backend) -> None:
    await backend.put_record("group", "old", LegacyGroup("old", ["a", "b"]))
    groups = registry(backend, ManualClock())
    document = await groups.document("old")
    assert document is not None
    assert document.member_targets == [ValTarget("a"), ValTarget("b")]
    assert await groups.get("old") == Group("old", ["a", "b"])
    # and what is written now still reads with the old record type
    await groups.put(Group("old", ["c", "a", "c"]))
    assert await backend.get_record("group", "old", LegacyGroup) == LegacyGroup(
        "old", ["c", "a"]
    )


async def test_put_keeps_val_ue_ids_and_document_content(backend: Backend) -> None:
    groups = registry(backend, ManualClock())
    await groups.create(
        GroupDocument(
            "g",
            targets=[ValTarget(val_ue_id="imei-1"), ValTarget("a")],
            description="d",
            extra='{"valSvcAreaId":"x"}',
        )
    )
    await groups.put(Group("g", ["b"]))
    document = await groups.document("g")
    assert document is not None
    assert document.member_targets == [ValTarget(val_ue_id="imei-1"), ValTarget("b")]
    assert document.members == ["b"]
    assert (document.description, document.extra) == ("d", '{"valSvcAreaId":"x"}')


async def test_create_update_errors(backend: Backend) -> None:
    groups = registry(backend, ManualClock())
    await groups.create(GroupDocument("g"))
    with pytest.raises(NotAuthorized):
        await groups.create(GroupDocument("g"))
    with pytest.raises(InvalidRequest) as missing:
        await groups.update("nope", lambda d: d)
    assert missing.value.cause == FailureCause.GROUP_NOT_FOUND
    with pytest.raises(InvalidRequest):
        await groups.update("g", lambda d: GroupDocument("renamed"))


async def test_resolution_is_cached_for_the_ttl(backend: Backend) -> None:
    clock = ManualClock()
    groups = registry(backend, clock)
    other_process = registry(backend, clock)
    assert await groups.get("g") is None
    await other_process.put(Group("g", ["a"]))
    assert await groups.get("g") is None  # cached "unknown"
    clock.advance(TTL + 1)
    assert await groups.get("g") == Group("g", ["a"])
    await groups.put(Group("g", ["b"]))  # through this registry: at once
    assert await groups.get("g") == Group("g", ["b"])


async def test_val_ue_ids_map_through_stored_registrations(backend: Backend) -> None:
    contact = Contact("10.0.0.1", 1)
    for ue, profile in (
        ("ue1", '{"msgin5g_ue_id":"imei-1"}'),
        ("ue2", '{"msgin5g_ue_id":"imei-1"}'),
        ("ue3", '{"msgin5g_ue_id":"imei-3"}'),
        ("ue4", "not json"),
    ):
        await backend.put_registration(
            UERegistration(ue, contact, contact, 0.0, profile=profile)
        )
    groups = registry(backend, ManualClock())
    await groups.create(
        GroupDocument(
            "g",
            targets=[
                ValTarget("ue3"),
                ValTarget(val_ue_id="imei-1"),
                ValTarget(val_ue_id="unknown"),
            ],
        )
    )
    assert await groups.get("g") == Group("g", ["ue3", "ue1", "ue2"])


async def test_unreachable_source_without_cache_raises(backend: Backend) -> None:
    class Down:
        location = "http://down.test"

        async def find(self, group_id: str, val_service_id: str) -> list[GroupDocument]:
            raise RecipientUnreachable("down")

        async def aclose(self) -> None:
            return None

    groups = GroupRegistry(backend, ManualClock(), DeliveryConfig(), source=Down())
    assert groups.external == "http://down.test"
    with pytest.raises(RecipientUnreachable):
        await groups.get("g")
