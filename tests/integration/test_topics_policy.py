"""Topic access control through a real server (issue 10 item 4, the attack replayed).

bob, a registered UE, tries to read and write alice's topic ``alice/private``
over a real CoAP socket (TOPICSUB, Observe GET, MSG); alice may; after the
operator runs ``msgin5g topic allow alice/private --subscribe bob`` (the real
CLI, in another process, on the storage the server runs on) bob may subscribe.
"""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import msgin5g
from msgin5g.client import Client
from msgin5g.coap import Code
from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue
from tests.integration.raw_observer import RawUE

pytestmark = pytest.mark.timeout(60)

SECRET = {"alice": "secret-alice", "bob": "secret-bob"}


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'policy.db'}"
    for ue, secret in SECRET.items():
        await provision_ue(url, ue, secret)
    return url


@pytest.fixture
async def server(url: str) -> AsyncIterator[Server]:
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "false",
            "coap.ack_timeout": "0.5",
            "coap.max_retransmit": "1",
            "topics.policy_cache_ttl": "0",  # see the CLI's change at once
        },
    )
    async with Server(config) as srv:
        yield srv


async def cli(url: str, *args: str) -> dict[str, Any]:
    """Run ``msgin5g topic ...`` in a separate process; its JSON output."""
    src = str(Path(msgin5g.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "msgin5g",
        "topic",
        *args,
        "--storage",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def topicsub(ue: str, *topics: str) -> dict[str, Any]:
    return {
        "messageType": "TOPICSUB",
        "originatingUeServiceId": ue,
        "messagingTopics": list(topics),
    }


def publication(ue: str, topic: str, n: int) -> dict[str, Any]:
    return {
        "messageType": "MSG",
        "messageId": f"{ue}-{n}",
        "originatingUeServiceId": ue,
        "messagingTopic": topic,
        "payload": "aGk=",
    }


async def test_bob_cannot_read_or_write_alices_topic_until_granted(
    server: Server, url: str
) -> None:
    service = server.service
    assert service is not None
    host, port = server.coap_address
    bob = RawUE("bob", SECRET["bob"], server.coap_address)
    try:
        await bob.register()
        async with Client(
            "alice",
            SECRET["alice"],
            server=f"coap://{host}:{port}",
            bind=("127.0.0.1", 0),
        ) as alice:
            await alice.register()
            # the attack: TOPICSUB, Observe, publish; each refused
            answer = json.loads(
                (await bob.post(topicsub("bob", "alice/private"))).payload
            )
            assert answer["topicResults"] == [
                {
                    "messagingTopic": "alice/private",
                    "result": "FAILURE",
                    "failureCause": "NOT_AUTHORIZED",
                }
            ]
            refused = await bob.observe("alice/private")
            assert refused.code == Code.FORBIDDEN and refused.observe is None
            body = json.loads(refused.payload)
            assert body["failureCause"] == "NOT_AUTHORIZED"
            assert body["messageType"] == "TOPICSUB"
            sent = json.loads(
                (await bob.post(publication("bob", "alice/private", 1))).payload
            )
            assert (sent["deliveryStatus"], sent["failureCause"]) == (
                "DELY_REJECTED",
                "NOT_AUTHORIZED",
            )
            assert service.topics.topics_of("bob") == []
            # bob's own namespace and open topics stay usable
            mixed = json.loads(
                (await bob.post(topicsub("bob", "bob/inbox", "weather"))).payload
            )
            assert [r["result"] for r in mixed["topicResults"]] == ["SUCCESS"] * 2
            # alice owns it
            mine = await alice.subscribe("alice/private")
            assert [r.result for r in mine.topic_results] == ["SUCCESS"]
            ok = await alice.publish("alice/private", "note to self")
            assert ok.delivery_status == "DELY_ACCEPTED"
            # the operator grants bob reading (not writing)
            rule = await cli(url, "allow", "alice/private", "--subscribe", "bob")
            assert rule["subscribe"] == ["bob"]
            granted = await bob.observe("alice/private")
            assert granted.code == Code.CONTENT and granted.observe is not None
            assert [
                o.subscriber for o in service.topics.observers("alice/private")
            ] == ["bob"]
            await alice.publish("alice/private", "hello bob")
            got = json.loads((await bob.notification()).payload)
            assert (got["messagingTopic"], got["recipientUeServiceId"]) == (
                "alice/private",
                "bob",
            )
            still = json.loads(
                (await bob.post(publication("bob", "alice/private", 2))).payload
            )
            assert still["deliveryStatus"] == "DELY_REJECTED"
            resub = json.loads(
                (await bob.post(topicsub("bob", "alice/private"))).payload
            )
            assert [r["result"] for r in resub["topicResults"]] == ["SUCCESS"]
            verdict = await cli(url, "check", "alice/private", "bob")
            assert (verdict["owner"], verdict["subscribe"], verdict["publish"]) == (
                "alice",
                True,
                False,
            )
    finally:
        bob.close()
