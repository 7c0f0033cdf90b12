"""``FastDelivery``: the hot A2P route without the framework, same answers.

The layer serves a valid ``deliver-as-message`` itself and hands every request it
would refuse for schema or auth reasons (and every other path) to the FastAPI
application with the body intact, so those answers come from one place.
"""

import json
from typing import Any

from msgin5g.config import RestConfig
from msgin5g.transports.rest.msgs_msgdelivery import AS_PATH, FastDelivery

from .conftest import as_message, make_rig


class Recorder:
    """The inner ASGI app: records what reaches it and answers 418."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.bodies.append((await receive()).get("body", b""))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(layer: FastDelivery, body: bytes, path: str = AS_PATH) -> list[Any]:
    sent: list[Any] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await layer(scope, receive, send)
    return sent


async def test_valid_request_is_served_without_the_framework() -> None:
    rig, backend = await make_rig()
    try:
        assert (await rig.register_as()).status_code == 201
        inner = Recorder()
        layer = FastDelivery(inner, rig.app.state.ctx)  # type: ignore[attr-defined]
        sent = await call(layer, json.dumps(as_message("f-1")).encode())
        assert inner.bodies == []
        assert sent[0]["status"] == 200
        assert (b"content-type", b"application/json") in sent[0]["headers"]
        ack = json.loads(sent[1]["body"])
        assert ack["status"] == "DELY_STORED"
        assert ack["msgId"] == "f-1"
        # the same answer as the FastAPI route gives for the same kind of message
        resp = await rig.http.post(AS_PATH, json=as_message("f-2"))
        assert resp.json() == {**ack, "msgId": "f-2"}
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def test_schema_auth_and_other_paths_go_to_the_route_with_the_body() -> None:
    rig, backend = await make_rig()
    try:
        inner = Recorder()
        layer = FastDelivery(inner, rig.app.state.ctx)  # type: ignore[attr-defined]
        null_member = json.dumps(as_message("n-1", appId=None)).encode()
        assert (await call(layer, null_member))[0]["status"] == 418
        assert (await call(layer, b"{not json"))[0]["status"] == 418
        other = json.dumps(as_message("o-1")).encode()
        path = "/msgs-msgdelivery/v1/deliver-ue-message"
        assert (await call(layer, other, path))[0]["status"] == 418
        assert inner.bodies == [null_member, b"{not json", other]
        # and the real route answers the null member 400 naming it
        resp = await rig.http.post(AS_PATH, content=null_member, headers=JSON)
        assert resp.status_code == 400
        assert "appId" in resp.text
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def test_with_oauth2_a_request_without_token_goes_to_the_route() -> None:
    rig, backend = await make_rig(RestConfig(oauth2=True))
    try:
        inner = Recorder()
        layer = FastDelivery(inner, rig.app.state.ctx)  # type: ignore[attr-defined]
        body = json.dumps(as_message("t-1")).encode()
        assert (await call(layer, body))[0]["status"] == 418
        resp = await rig.http.post(AS_PATH, content=body, headers=JSON)
        assert resp.status_code == 401
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


JSON = {"content-type": "application/json"}
