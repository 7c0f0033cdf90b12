"""SS_GroupManagement (TS 29.549) over httpx ASGITransport: documents and messaging."""

import json

import httpx
import msgspec

from msgin5g.config import DeliveryConfig, SealConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service.groups import GroupRegistry
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID
from msgin5g.transports.rest.seal_client import SealGroupSource

from .conftest import UE1, Rig, as_message

DOCS = "/ss-gm/v1/group-documents"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
MERGE = {"content-type": "application/merge-patch+json"}
UE2 = Contact("10.0.0.2", 40002)


def assert_problem(resp: httpx.Response, status: int, cause: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["cause"] == cause, body
    return body  # type: ignore[no-any-return]


def doc(group: str = "g1", *users: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"valGroupId": group, **extra}
    if users:
        body["members"] = [{"valUserId": u} for u in users]
    return body


async def patch(rig: Rig, group: str, body: object) -> httpx.Response:
    return await rig.http.patch(
        f"{DOCS}/{group}", content=json.dumps(body), headers=MERGE
    )


# documents ------------------------------------------------------------------------


async def test_post_answers_201_location_and_document(rig: Rig) -> None:
    resp = await rig.http.post(DOCS, json=doc("g1", "ue1", "ue2", grpDesc="pumps"))
    assert resp.status_code == 201, resp.text
    location = resp.headers["location"]
    assert location == "http://msgin5g.test/ss-gm/v1/group-documents/g1"
    assert resp.json() == {
        "valGroupId": "g1",
        "grpDesc": "pumps",
        "members": [{"valUserId": "ue1"}, {"valUserId": "ue2"}],
        "resUri": location,
    }
    got = await rig.http.get(location)
    assert got.status_code == 200 and got.json() == resp.json()


async def test_post_of_existing_group_is_403_with_clear_cause(rig: Rig) -> None:
    assert (await rig.http.post(DOCS, json=doc("g1", "ue1"))).status_code == 201
    again = await rig.http.post(DOCS, json=doc("g1", "ue2"))
    body = assert_problem(again, 403, "GROUP_ALREADY_EXISTS")
    assert "g1" in str(body["detail"])


async def test_every_document_member_reads_back_as_written(rig: Rig) -> None:
    full = {
        "valGroupId": "g1",
        "grpDesc": "all fields",
        "members": [{"valUeId": "imei-9"}, {"valUserId": "ue1"}],
        "valGrpConf": "policy=members",
        "valServiceIds": ["msgin5g", "other"],
        "valSvcInf": "info",
        "locInfo": {"cellId": "c1", "geographicArea": {"shape": "POINT"}},
        "addLocInfo": {"civicAddresses": [{"country": "DE"}]},
        "valSvcAreaId": "area-7",
        "extGrpId": "grp@example.com",
        "com5GLanType": "IPV4",
        "vendorExtension": {"x": 1},
    }
    assert (await rig.http.post(DOCS, json=full)).status_code == 201
    got = (await rig.http.get(f"{DOCS}/g1")).json()
    assert got.pop("resUri").endswith("/g1")
    assert got == full
    full["grpDesc"] = "replaced"
    del full["locInfo"]
    put = await rig.http.put(f"{DOCS}/g1", json=full)
    assert put.status_code == 200, put.text
    got = (await rig.http.get(f"{DOCS}/g1")).json()
    del got["resUri"]
    assert got == full


async def test_collection_filters(rig: Rig) -> None:
    await rig.http.post(DOCS, json=doc("g1", "ue1", valServiceIds=["msgin5g"]))
    await rig.http.post(DOCS, json=doc("g2", "ue2", valServiceIds=["other"]))
    await rig.http.post(DOCS, json=doc("g3", "ue1"))  # no valServiceIds: any

    async def ids(**query: str) -> list[str]:
        resp = await rig.http.get(DOCS, params=query)
        assert resp.status_code == 200, resp.text
        return [d["valGroupId"] for d in resp.json()]

    assert await ids() == ["g1", "g2", "g3"]
    assert await ids(**{"val-group-id": "g2"}) == ["g2"]
    assert await ids(**{"val-group-id": "nope"}) == []
    assert await ids(**{"val-service-id": "msgin5g"}) == ["g1", "g3"]
    assert await ids(**{"val-group-id": "g2", "val-service-id": "msgin5g"}) == []


async def test_get_flags_select_members_or_configuration(rig: Rig) -> None:
    await rig.http.post(DOCS, json=doc("g1", "ue1", grpDesc="d", valGrpConf="c"))
    url = f"{DOCS}/g1"
    members = (await rig.http.get(url, params={"group-members": "true"})).json()
    assert members == {"valGroupId": "g1", "members": [{"valUserId": "ue1"}]}
    conf = (await rig.http.get(url, params={"group-configuration": "true"})).json()
    assert conf == {"valGroupId": "g1", "valGrpConf": "c"}
    both = await rig.http.get(
        url, params={"group-members": "true", "group-configuration": "true"}
    )
    assert set(both.json()) == {"valGroupId", "members", "valGrpConf"}
    whole = await rig.http.get(url, params={"group-members": "false"})
    assert whole.json()["grpDesc"] == "d"
    bad = await rig.http.get(url, params={"group-members": "perhaps"})
    assert_problem(bad, 400, "INVALID_MESSAGE")


async def test_patch_is_a_json_merge_patch(rig: Rig) -> None:
    await rig.http.post(
        DOCS,
        json=doc(
            "g1",
            "ue1",
            grpDesc="d",
            valGrpConf="c",
            locInfo={"cellId": "1", "plmnId": "p"},
        ),
    )
    resp = await patch(
        rig,
        "g1",
        {
            "grpDesc": None,
            "members": [{"valUserId": "ue2"}, {"valUeId": "imei-1"}],
            "locInfo": {"cellId": "2", "plmnId": None},
            "valGroupId": "ignored",
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["valGroupId"] == "g1" and "grpDesc" not in body
    assert body["members"] == [{"valUserId": "ue2"}, {"valUeId": "imei-1"}]
    assert body["locInfo"] == {"cellId": "2"}
    assert body["valGrpConf"] == "c"
    emptied = await patch(rig, "g1", {"members": None})
    assert "members" not in emptied.json()
    assert (await patch(rig, "g1", {})).status_code == 200


async def test_patch_needs_merge_patch_content_type_and_a_valid_patch(rig: Rig) -> None:
    await rig.http.post(DOCS, json=doc("g1", "ue1"))
    plain = await rig.http.patch(f"{DOCS}/g1", json={"grpDesc": "x"})
    assert_problem(plain, 415, "INVALID_MESSAGE")
    assert_problem(await patch(rig, "g1", {"members": []}), 400, "INVALID_MESSAGE")
    assert_problem(await patch(rig, "g1", ["not", "an object"]), 400, "INVALID_MESSAGE")


async def test_put_must_keep_the_group_id(rig: Rig) -> None:
    await rig.http.post(DOCS, json=doc("g1", "ue1"))
    resp = await rig.http.put(f"{DOCS}/g1", json=doc("g2", "ue1"))
    body = assert_problem(resp, 400, "INVALID_MESSAGE")
    assert body["invalidParams"][0]["param"] == "valGroupId"  # type: ignore[index]


async def test_unknown_document_is_404(rig: Rig) -> None:
    for resp in (
        await rig.http.get(f"{DOCS}/nope"),
        await rig.http.put(f"{DOCS}/nope", json=doc("nope", "ue1")),
        await patch(rig, "nope", {"grpDesc": "x"}),
        await rig.http.delete(f"{DOCS}/nope"),
    ):
        assert_problem(resp, 404, "GROUP_NOT_FOUND")


async def test_delete_answers_204(rig: Rig) -> None:
    await rig.http.post(DOCS, json=doc("g1", "ue1"))
    resp = await rig.http.delete(f"{DOCS}/g1")
    assert resp.status_code == 204 and resp.content == b""
    assert (await rig.http.get(f"{DOCS}/g1")).status_code == 404


async def test_invalid_documents_are_400_with_invalid_params(rig: Rig) -> None:
    for body in (
        {"valGroupId": "a/b"},
        {"members": [{"valUserId": "ue1"}]},
        doc("g1", members=[]),
        doc("g1", members=[{"valUserId": "ue1", "valUeId": "x"}]),
        doc("g1", members=[{}]),
        doc("g1", valServiceIds=[]),
        doc("g1", suppFeat="xyz"),
        doc("g1", locInfo={"cellId": 5}),
    ):
        resp = await rig.http.post(DOCS, json=body)
        problem = assert_problem(resp, 400, "INVALID_MESSAGE")
        assert problem["invalidParams"], problem


async def test_group_id_is_percent_encoded_in_uris(rig: Rig) -> None:
    resp = await rig.http.post(DOCS, json=doc("pumps hall?1", "ue1"))
    assert resp.headers["location"].endswith("/group-documents/pumps%20hall%3F1")
    got = await rig.http.get(resp.headers["location"])
    assert got.json()["valGroupId"] == "pumps hall?1"


async def test_legacy_group_record_is_a_document(rig: Rig) -> None:
    class Legacy(msgspec.Struct):
        group_id: str
        members: list[str]

    await rig.service.backend.put_record("group", "old", Legacy("old", ["ue1", "ue2"]))
    got = (await rig.http.get(f"{DOCS}/old")).json()
    assert got["members"] == [{"valUserId": "ue1"}, {"valUserId": "ue2"}]
    group = await rig.service.groups.get("old")
    assert group is not None and group.members == ["ue1", "ue2"]


# effect on group messaging ---------------------------------------------------------


async def register(
    rig: Rig, ue: str, contact: Contact, ue_id: str | None = None
) -> None:
    secret = {"ue1": "s1", "ue2": "s2"}[ue]
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(secret, ue))
    reg = Reg(ue_service_id=ue, ue_credential_info=info, msgin5g_ue_id=ue_id)
    outcome = await rig.service.register(reg, contact)
    assert outcome.response.registration_result == "SUCCESS"


async def send_to_group(rig: Rig, msg_id: str, group: str = "g1") -> httpx.Response:
    return await rig.http.post(
        A2P, json=as_message(msg_id, to=group, addr_type="GROUP")
    )


async def wait_for(rig: Rig, contact: Contact, count: int) -> list[Msg]:
    while len(rig.ue.messages_for(contact)) < count:
        rig.ue.event.clear()
        await rig.ue.event.wait()
    return [m for m in rig.ue.messages_for(contact) if isinstance(m, Msg)]


async def test_api_changes_take_effect_at_once(rig: Rig) -> None:
    await rig.register_as()
    await register(rig, "ue1", UE1)
    await register(rig, "ue2", UE2)
    assert_problem(await send_to_group(rig, "m-0"), 404, "GROUP_NOT_FOUND")
    await rig.http.post(DOCS, json=doc("g1", "ue1"))
    assert (await send_to_group(rig, "m-1")).status_code == 200
    [first] = await wait_for(rig, UE1, 1)
    assert first.recipient_group_service_id == "g1"
    # the fake clock never moves: only the invalidation lets the change through
    await patch(rig, "g1", {"members": [{"valUserId": "ue2"}]})
    assert (await send_to_group(rig, "m-2")).status_code == 200
    [second] = await wait_for(rig, UE2, 1)
    assert second.message_id == "m-2"
    assert len(rig.ue.messages_for(UE1)) == 1
    await rig.http.delete(f"{DOCS}/g1")
    assert_problem(await send_to_group(rig, "m-3"), 404, "GROUP_NOT_FOUND")


def use_groups(rig: Rig, groups: GroupRegistry) -> None:
    """Swap the service's group registry (the REST API's and the router's)."""
    rig.service.groups = groups
    rig.service.router._groups = groups


async def test_val_ue_id_members_map_to_registered_ues(rig: Rig) -> None:
    use_groups(
        rig,
        GroupRegistry(
            rig.service.backend,
            rig.clock,
            DeliveryConfig(),
            registrations=rig.service.registry,
        ),
    )
    await rig.register_as()
    await register(rig, "ue1", UE1, ue_id="imei-1")
    await register(rig, "ue2", UE2, ue_id="imei-2")
    await rig.http.post(DOCS, json=doc("g1", members=[{"valUeId": "imei-2"}]))
    assert (await send_to_group(rig, "m-1")).status_code == 200
    [got] = await wait_for(rig, UE2, 1)
    assert got.recipient_ue_service_id == "ue2"
    assert rig.ue.messages_for(UE1) == []


async def test_documents_of_another_val_service_do_not_resolve(rig: Rig) -> None:
    await rig.register_as()
    await rig.http.post(DOCS, json=doc("g1", "ue1", valServiceIds=["other"]))
    assert_problem(await send_to_group(rig, "m-1"), 404, "GROUP_NOT_FOUND")


# external SEAL group management server ----------------------------------------------


def external(rig: Rig, handler: httpx.MockTransport) -> SealGroupSource:
    source = SealGroupSource(
        SealConfig(gm_url="http://seal.test", val_service_id="msgin5g"),
        transport=handler,
    )
    use_groups(
        rig,
        GroupRegistry(
            rig.service.backend,
            rig.clock,
            DeliveryConfig(group_cache_ttl=5),
            source=source,
            registrations=rig.service.registry,
        ),
    )
    return source


async def test_external_mode_resolves_there_and_refuses_local_management(
    rig: Rig,
) -> None:
    asked: list[httpx.Request] = []
    members = [{"valUserId": "ue1"}, {"valUserId": "bad/id"}]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        if request.url.params["val-group-id"] == "g1":
            return httpx.Response(200, json=[doc("g1", members=members)])
        return httpx.Response(200, json=[])

    source = external(rig, httpx.MockTransport(answer))
    await rig.register_as()
    await register(rig, "ue1", UE1)
    assert (await send_to_group(rig, "m-1")).status_code == 200
    [got] = await wait_for(rig, UE1, 1)
    assert got.recipient_group_service_id == "g1"
    assert asked[0].url.path == "/ss-gm/v1/group-documents"
    assert dict(asked[0].url.params) == {
        "val-group-id": "g1",
        "val-service-id": MSGIN5G_SERVICE_ID,  # the default: coap.service_id's
    }
    assert_problem(await send_to_group(rig, "m-2", "nope"), 404, "GROUP_NOT_FOUND")
    for resp in (
        await rig.http.get(DOCS),
        await rig.http.post(DOCS, json=doc("g9", "ue1")),
        await patch(rig, "g1", {"grpDesc": "x"}),
    ):
        body = assert_problem(resp, 403, "GROUP_MANAGEMENT_EXTERNAL")
        assert "http://seal.test" in str(body["detail"])
    await source.aclose()


async def test_external_server_down_uses_stale_cache_or_fails_clearly(
    rig: Rig,
) -> None:
    up = True

    def answer(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=[doc("g1", "ue1")])

    source = external(rig, httpx.MockTransport(answer))
    await rig.register_as()
    await register(rig, "ue1", UE1)
    assert (await send_to_group(rig, "m-1")).status_code == 200
    up = False
    rig.clock.advance(10)  # past group_cache_ttl: asks again, fails, keeps the old
    assert (await send_to_group(rig, "m-2")).status_code == 200
    await wait_for(rig, UE1, 2)
    failed = await send_to_group(rig, "m-3", "never-seen")
    body = assert_problem(failed, 503, "RECIPIENT_NOT_REACHABLE")
    assert "seal.test" in str(body["detail"])
    await source.aclose()


async def test_external_server_odd_answers(rig: Rig) -> None:
    answers = iter(
        [
            httpx.Response(500),
            httpx.Response(200, text="not json"),
            httpx.Response(404, json={"status": 404}),
            httpx.Response(
                200,
                json=[
                    doc("other", "ue1"),
                    doc("g1", "ue1", valServiceIds=["not-msgin5g"]),
                ],
            ),
        ]
    )
    source = external(rig, httpx.MockTransport(lambda _: next(answers)))
    await rig.register_as()
    assert_problem(await send_to_group(rig, "m-1"), 503, "RECIPIENT_NOT_REACHABLE")
    assert_problem(await send_to_group(rig, "m-2"), 503, "RECIPIENT_NOT_REACHABLE")
    assert_problem(await send_to_group(rig, "m-3"), 404, "GROUP_NOT_FOUND")
    rig.clock.advance(10)
    assert_problem(await send_to_group(rig, "m-4"), 404, "GROUP_NOT_FOUND")
    await source.aclose()
