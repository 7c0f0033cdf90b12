"""REST hardening with OAuth2 on: roles, scopes, ownership, token endpoint limits.

Each test replays one attack of issue 10 (items 3 and 14) against the ASGI app
and checks it is refused, while the legitimate use next to it still works.
"""

from collections.abc import AsyncIterator

import httpx
import pytest

from msgin5g.config import RestConfig
from msgin5g.model.messages import Imdn
from msgin5g.storage.memory import MemoryBackend
from msgin5g.transports.rest.jwt_tokens import SigningKey

from .conftest import Rig, as_message, make_rig

REG = "/msgs-asregistration/v1/registrations"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
UEMSG = "/msgs-msgdelivery/v1/deliver-ue-message"
REPORT = "/msgs-msgdelivery/v1/deliver-report"
DOCS = "/ss-gm/v1/group-documents"
TOKEN = "/oauth2/token"


def assert_problem(resp: httpx.Response, status: int, cause: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["cause"] == cause, body
    return body  # type: ignore[no-any-return]


async def oauth_rig(**config: object) -> tuple[Rig, MemoryBackend]:
    rig, backend = await make_rig(RestConfig(oauth2=True, **config))  # type: ignore[arg-type]
    apps = rig.service.applications
    await apps.add_client("as1", "secret-as1")
    await apps.add_client("as2", "secret-as2")
    await apps.add_client("gw1", "secret-gw1", role="gateway", ues=["ue1"])
    await apps.add_client("gw2", "secret-gw2", role="gateway", ues=["ue2*"])
    await apps.add_client("op", "secret-op", role="operator")
    return rig, backend


@pytest.fixture
async def orig() -> AsyncIterator[Rig]:
    rig, backend = await oauth_rig()
    yield rig
    await rig.http.aclose()
    await rig.service.aclose()
    await backend.aclose()


async def token_response(
    http: httpx.AsyncClient, client: str, secret: str, scope: str | None = None
) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client,
        "client_secret": secret,
    }
    if scope is not None:
        form["scope"] = scope
    return await http.post(TOKEN, data=form)


async def bearer(
    rig: Rig, client: str, secret: str | None = None, scope: str | None = None
) -> dict[str, str]:
    resp = await token_response(rig.http, client, secret or f"secret-{client}", scope)
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def ue_message(ue: str = "ue1", msg_id: str = "u-1", **kw: object) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": "UE", "addr": ue},
        "destAddr": {"addrType": "AS", "addr": "as1"},
        "msgId": msg_id,
        "stoAndFwInd": True,
        **kw,
    }


# roles: deliver-ue-message and deliver-report ----------------------------------------


async def test_an_as_cannot_send_as_a_ue_but_its_gateway_can(orig: Rig) -> None:
    as1 = await bearer(orig, "as1")
    target = {"asSvcId": "as1", "targetUri": "http://127.0.0.1:9/"}
    assert (await orig.http.post(REG, json=target, headers=as1)).is_success
    assert_problem(
        await orig.http.post(
            UEMSG, json=ue_message(), headers=await bearer(orig, "as2")
        ),
        403,
        "NOT_AUTHORIZED",
    )
    # a gateway for other UEs neither
    gw2 = await bearer(orig, "gw2")
    assert_problem(
        await orig.http.post(UEMSG, json=ue_message(), headers=gw2),
        403,
        "NOT_AUTHORIZED",
    )
    ok = await orig.http.post(
        UEMSG, json=ue_message(), headers=await bearer(orig, "gw1")
    )
    assert ok.status_code == 200, ok.text
    # gw2 serves every UE whose id starts with ue2, the operator every UE
    ok2 = await orig.http.post(UEMSG, json=ue_message("ue2", "u-2"), headers=gw2)
    assert ok2.status_code == 200, ok2.text
    op = await orig.http.post(
        UEMSG, json=ue_message("ue2", "u-3"), headers=await bearer(orig, "op")
    )
    assert op.status_code == 200, op.text


async def test_a_ue_report_is_taken_only_from_a_gateway_serving_that_ue(
    orig: Rig,
) -> None:
    as1 = await bearer(orig, "as1")
    assert (
        await orig.http.post(
            REG,
            json={"asSvcId": "as1", "targetUri": "http://127.0.0.1:9/"},
            headers=as1,
        )
    ).is_success
    await orig.register_ue("ue1")
    sent = await orig.http.post(
        A2P, json=as_message("r-1", delivStReqInd=True), headers=as1
    )
    assert sent.status_code == 200, sent.text
    report = {
        "oriAddr": {"addrType": "UE", "addr": "ue1"},
        "destAddr": {"addrType": "AS", "addr": "as1"},
        "msgId": "r-1",
        "delivSt": "REPT_DELY_SUCCESS",
    }
    for forger in ("as2", "gw2"):
        assert_problem(
            await orig.http.post(
                REPORT, json=report, headers=await bearer(orig, forger)
            ),
            403,
            "NOT_AUTHORIZED",
        )
    # an AS report for another AS's Service ID is refused too
    as_report = {**report, "oriAddr": {"addrType": "AS", "addr": "as1"}}
    assert_problem(
        await orig.http.post(REPORT, json=as_report, headers=await bearer(orig, "as2")),
        403,
        "NOT_AUTHORIZED",
    )
    assert orig.as_.delivered == []
    ok = await orig.http.post(REPORT, json=report, headers=await bearer(orig, "gw1"))
    assert ok.status_code == 200, ok.text
    await orig.as_.wait_for(1)
    [(_, item)] = orig.as_.delivered
    assert isinstance(item, Imdn) and item.message_id == "r-1"


async def test_a_gateway_may_not_act_for_an_as(orig: Rig) -> None:
    gw1 = await bearer(orig, "gw1")
    assert (
        await orig.http.post(
            REG, json={"asSvcId": "as1"}, headers=await bearer(orig, "as1")
        )
    ).is_success
    assert_problem(
        await orig.http.post(A2P, json=as_message(), headers=gw1), 403, "NOT_AUTHORIZED"
    )


# registrations -------------------------------------------------------------------------


async def test_registrations_belong_to_their_as_and_the_operator_manages_all(
    orig: Rig,
) -> None:
    op = await bearer(orig, "op")
    made = await orig.http.post(REG, json={"asSvcId": "as1"}, headers=op)
    assert made.status_code == 201, made.text
    path = made.headers["location"].removeprefix("http://msgin5g.test")
    as2 = await bearer(orig, "as2")
    assert_problem(await orig.http.delete(path, headers=as2), 403, "NOT_AUTHORIZED")
    # the AS itself may remove what the operator registered for it
    assert (await orig.http.delete(path, headers=await bearer(orig, "as1"))).is_success
    mine = await orig.http.post(REG, json={"asSvcId": "as2"}, headers=as2)
    path = mine.headers["location"].removeprefix("http://msgin5g.test")
    assert (await orig.http.delete(path, headers=op)).status_code == 200


# SEAL group documents --------------------------------------------------------------------


async def test_group_documents_belong_to_their_creator(orig: Rig) -> None:
    as1, as2 = await bearer(orig, "as1"), await bearer(orig, "as2")
    body = {"valGroupId": "g1", "members": [{"valUserId": "ue1"}]}
    assert (await orig.http.post(DOCS, json=body, headers=as1)).status_code == 201
    other = {"valGroupId": "g1", "members": [{"valUserId": "ue2"}]}
    merge = {**as2, "content-type": "application/merge-patch+json"}
    refused = [
        await orig.http.put(f"{DOCS}/g1", json=other, headers=as2),
        await orig.http.patch(f"{DOCS}/g1", content=b'{"members":null}', headers=merge),
        await orig.http.delete(f"{DOCS}/g1", headers=as2),
        await orig.http.get(f"{DOCS}/g1", headers=as2),
    ]
    for resp in refused:
        assert_problem(resp, 403, "NOT_AUTHORIZED")
    listed = await orig.http.get(DOCS, headers=as2)
    assert listed.status_code == 200 and listed.json() == []
    stored = await orig.service.groups.document("g1")
    assert stored is not None and stored.members == ["ue1"]
    # the creator changes it (and stays its owner); the operator may delete it
    put = await orig.http.put(f"{DOCS}/g1", json=other, headers=as1)
    assert put.status_code == 200, put.text
    changed = await orig.service.groups.document("g1")
    assert changed is not None and changed.owner == "as1"
    assert [
        d["valGroupId"] for d in (await orig.http.get(DOCS, headers=as1)).json()
    ] == ["g1"]
    op = await bearer(orig, "op")
    assert (await orig.http.delete(f"{DOCS}/g1", headers=op)).status_code == 204


# scopes ----------------------------------------------------------------------------------


async def test_a_token_without_the_apis_scope_gets_403_insufficient_scope(
    orig: Rig,
) -> None:
    resp = await token_response(orig.http, "as1", "secret-as1", "msgs-asregistration")
    assert resp.status_code == 200 and resp.json()["scope"] == "msgs-asregistration"
    narrow = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    assert (
        await orig.http.post(REG, json={"asSvcId": "as1"}, headers=narrow)
    ).is_success
    refused = await orig.http.post(A2P, json=as_message(), headers=narrow)
    assert_problem(refused, 403, "INSUFFICIENT_SCOPE")
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # a gateway's role has no ss-gm scope: asking for it is invalid_scope, and
    # its default token cannot reach the API
    asked = await token_response(orig.http, "gw1", "secret-gw1", "ss-gm")
    assert asked.status_code == 400 and asked.json()["error"] == "invalid_scope"
    gw1 = await bearer(orig, "gw1")
    assert_problem(await orig.http.get(DOCS, headers=gw1), 403, "INSUFFICIENT_SCOPE")
    full = await token_response(orig.http, "as1", "secret-as1")
    assert set(full.json()["scope"].split()) == {
        "msgs-asregistration",
        "msgs-msgdelivery",
        "msgs-topicsub",
        "msgg-bgdelivery",
        "ss-gm",
    }


# token endpoint: brute force and token flooding ------------------------------------------


def client_at(rig: Rig, address: str) -> httpx.AsyncClient:
    transport = rig.http._transport  # the ASGI app of the rig
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=(address, 40000)),
        base_url="http://msgin5g.test",
    )


async def test_wrong_secret_guessing_is_throttled_per_client_and_per_ip(
    orig: Rig,
) -> None:
    attacker = client_at(orig, "10.66.0.1")
    try:
        statuses = [
            (await token_response(attacker, "as1", f"guess-{i}")).status_code
            for i in range(30)
        ]
        assert statuses[:10] == [401] * 10  # rest.auth_failure_burst
        assert set(statuses[10:]) == {429}
        throttled = await token_response(attacker, "as1", "secret-as1")
        assert throttled.status_code == 429  # the right secret is not even checked
        assert int(throttled.headers["retry-after"]) >= 1
        assert throttled.json()["error"] == "invalid_client"
        # the attacker's address is throttled for other client ids too
        assert (await token_response(attacker, "as2", "secret-as2")).status_code == 429
        # another client elsewhere still gets its token at once
        elsewhere = client_at(orig, "10.0.0.2")
        try:
            assert (
                await token_response(elsewhere, "as2", "secret-as2")
            ).status_code == 200
            # as1 itself is slowed down while guessing against it goes on...
            assert (
                await token_response(elsewhere, "as1", "secret-as1")
            ).status_code == 429
            orig.clock.advance(5.0)  # ...for one refill (rest.auth_failure_rate)
            assert (
                await token_response(elsewhere, "as1", "secret-as1")
            ).status_code == 200
        finally:
            await elsewhere.aclose()
    finally:
        await attacker.aclose()


async def test_one_client_flooding_tokens_never_evicts_another_clients_token() -> None:
    """Tokens are stateless JWTs: issuing many keeps nothing and evicts nothing."""
    rig, backend = await oauth_rig()
    try:
        as2 = await bearer(rig, "as2")
        first_as1 = await bearer(rig, "as1")
        for _ in range(60):
            await bearer(rig, "as1")
        ok = await rig.http.post(REG, json={"asSvcId": "as2"}, headers=as2)
        assert ok.status_code == 201, ok.text
        ok = await rig.http.post(REG, json={"asSvcId": "as1"}, headers=first_as1)
        assert ok.status_code == 201, ok.text
        # one signing key in storage, whatever the number of tokens
        assert len(await backend.load_records("rest-jwt-key", SigningKey)) == 1
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()
