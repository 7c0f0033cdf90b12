"""NATS JetStream backend: what the shared conformance suite cannot show.

Against real ``nats-server -js`` processes started from the installed binary:
kill -9 of msgin5g and of nats-server keeps every acknowledged write; the
duplicate-detection crash window is closed by ``Nats-Msg-Id``; IDs that NATS
subjects and keys cannot hold; two backends ("nodes") on one prefix; URL
options, credentials and a fast, explained failure when no server answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from msgin5g.config import StorageConfig
from msgin5g.errors import ConfigError, StorageUnavailable
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, fanout_template, member_copy
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.storage import open_backend
from msgin5g.storage.base import DedupRecord
from msgin5g.storage.nats import NatsBackend, parse_url
from msgin5g.storage.nats.codec import token, untoken
from tests.conftest import require_binary
from tests.storage.nats_server import NatsServer, fresh_prefix, session_server

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000.0


def item(
    message_id: str, recipient: str = "ue-b", payload: bytes = b"hi"
) -> QueuedItem:
    msg = Msg(
        message_id=message_id,
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=recipient,
        payload=payload,
    )
    return QueuedItem(recipient, msg, 1, T0 + 3600, True)


def record(
    message_id: str, fingerprint: bytes = b"fp", *, expires_at: float = T0 + 100
) -> DedupRecord:
    return DedupRecord(
        "ue-a", message_id, fingerprint, b"resp-" + fingerprint, expires_at
    )


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test alone (it gets killed)."""
    server = NatsServer(require_binary("nats-server"), tmp_path / "js")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def backend() -> AsyncIterator[NatsBackend]:
    url = f"{session_server().url}?prefix={fresh_prefix()}"
    opened = open_backend(url)
    assert isinstance(opened, NatsBackend)
    await opened.start()
    yield opened
    await opened.aclose()


# ---------------------------------------------------------------- crash


CRASH_SCRIPT = """
import asyncio, os, signal, sys
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, fanout_template, member_copy
from msgin5g.storage import open_backend
from msgin5g.storage.base import DedupRecord

async def main(url):
    backend = open_backend(url)
    await backend.start()
    for i in range(30):
        msg = Msg(message_id=f"m{i}", originating_ue_service_id="ue-a",
                  recipient_ue_service_id="ue-b", payload=b"x" * i)
        rec = DedupRecord("ue-a", f"m{i}", b"fp", b"resp", 2e9)
        await backend.enqueue_once(QueuedItem("ue-b", msg, i % 3, 2e9, True), rec, 1.0)
    template = fanout_template(Msg(message_id="g1", originating_ue_service_id="ue-a",
                                   recipient_group_service_id="grp", payload=b"all"))
    members = [QueuedItem(r, member_copy(template, r), 1, 2e9, True) for r in ("ue-c", "ue-d")]
    routes = [ReportRoute("g1", "ue-c", "ue-a", 2e9)]
    await backend.enqueue_fanout(template, members, routes,
                                 DedupRecord("ue-a", "g1", b"fp", b"resp", 2e9), 1.0)
    await backend.put_credential("ue-b", b"digest")
    await backend.put_record("kind", "k.1", DedupRecord("x", "y", b"", b"", 0.0))
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before any answer could be sent

asyncio.run(main(sys.argv[1]))
"""


async def test_acknowledged_writes_survive_kill_9_of_msgin5g_and_nats_server(
    own_server: NatsServer,
) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    url = f"{own_server.url}?prefix=crash"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "committed"
    own_server.kill()  # no clean shutdown of JetStream either
    own_server.start()

    backend = open_backend(url)
    await backend.start()
    try:
        pending = await backend.pending_for("ue-b", limit=1000)
        assert sorted(i.item.message_id for i in pending) == sorted(
            f"m{i}" for i in range(30)
        )
        assert [(i.priority, i.seq) for i in pending] == sorted(
            (i.priority, i.seq) for i in pending
        )
        assert pending[-1].item.payload is not None
        for i in range(30):  # every resend is answered from the record
            retry = item(f"m{i}")
            existing = await backend.enqueue_once(retry, record(f"m{i}"), T0)
            assert existing is not None and existing.response == b"resp"
            assert retry.seq == 0
        for member in ("ue-c", "ue-d"):
            (copy,) = await backend.pending_for(member)
            assert isinstance(copy.item, Msg)
            assert copy.item.recipient_ue_service_id == member
            assert copy.item.payload == b"all"
        assert await backend.find_dedup("ue-a", "g1", T0) is not None
        assert await backend.take_report_route("g1", "ue-c") is not None
        assert await backend.get_credential("ue-b") == b"digest"
        assert await backend.get_record("kind", "k.1", DedupRecord) is not None
        assert await backend.count() == 32
    finally:
        await backend.aclose()


async def test_resend_after_crash_before_the_record_is_not_stored_twice(
    backend: NatsBackend,
) -> None:
    """The message was acknowledged by JetStream but its dedup record was not written."""
    first = item("m1")
    assert await backend.enqueue_once(first, record("m1"), T0) is None
    # the crash window: the record never made it (delete it behind the backend's back)
    assert await backend._kv["dedup"].delete(f"{token('ue-a')}.{token('m1')}")
    assert await backend.find_dedup("ue-a", "m1", T0) is None

    resend = item("m1")
    assert await backend.enqueue_once(resend, record("m1"), T0) is None
    assert (
        resend.seq == first.seq
    )  # JetStream's Nats-Msg-Id window found the first copy
    assert await backend.count() == 1
    assert await backend.find_dedup("ue-a", "m1", T0) == record("m1")

    template = fanout_template(
        Msg(
            message_id="g",
            originating_ue_service_id="ue-a",
            recipient_group_service_id="grp",
        )
    )
    members = [
        QueuedItem(r, member_copy(template, r), 1, T0 + 60, True) for r in ("x", "y")
    ]
    await backend.enqueue_fanout(template, members, [], record("g"), T0)
    assert await backend._kv["dedup"].delete(f"{token('ue-a')}.{token('g')}")
    again = [
        QueuedItem(r, member_copy(template, r), 1, T0 + 60, True)
        for r in ("x", "y", "z")
    ]
    assert await backend.enqueue_fanout(template, again, [], record("g"), T0) is None
    assert sorted(await backend.recipients_with_pending()) == ["ue-b", "x", "y", "z"]
    assert await backend.count() == 4  # x and y once each, z new
    (z,) = await backend.pending_for("z")
    assert isinstance(z.item, Msg) and z.item.recipient_ue_service_id == "z"


async def test_reuse_of_an_id_whose_record_expired_is_stored_again(
    backend: NatsBackend,
) -> None:
    """Same originator, messageId and content as an expired record, within
    JetStream's duplicate window: a new message, not a duplicate (the backend
    reads the record only on JetStream's "duplicate" answer, then republishes)."""
    first = item("m1")
    assert (
        await backend.enqueue_once(first, record("m1", expires_at=T0 + 10), T0) is None
    )
    again = item("m1")
    assert (
        await backend.enqueue_once(again, record("m1", expires_at=T0 + 99), T0 + 10)
        is None
    )
    assert again.seq != first.seq
    assert await backend.count() == 2
    assert await backend.find_dedup("ue-a", "m1", T0 + 10) == record(
        "m1", expires_at=T0 + 99
    )


async def test_resend_of_a_live_key_is_answered_and_stores_nothing(
    backend: NatsBackend,
) -> None:
    """The common resend: same content, record live -> the first answer, one copy."""
    assert await backend.enqueue_once(item("m1"), record("m1"), T0) is None
    assert await backend.enqueue_once(item("m1"), record("m1"), T0 + 1) == record("m1")
    assert await backend.count() == 1


# ---------------------------------------------------------------- IDs and nodes


@pytest.mark.parametrize(
    "odd",
    [
        "ue.with.dots",
        "ue*",
        "ue>",
        "ue with spaces",
        "\u00fc\u00e9-\U0001f600",
        "a=b:c_",
    ],
)
async def test_ids_nats_subjects_cannot_hold(backend: NatsBackend, odd: str) -> None:
    assert untoken(token(odd)) == odd
    await backend.put_credential(odd, b"d")
    await backend.put_registration(
        UERegistration(odd, Contact("::1", 1), Contact("::1", 1), registered_at=1.0)
    )
    seq = await backend.enqueue(item(odd, recipient=odd))
    await backend.enqueue(item("other", recipient=odd + "x"))
    await backend.put_record(odd, odd, record(odd))
    await backend.put_report_route(ReportRoute(odd, odd, "ue-a", T0))
    assert await backend.list_credentials() == [odd]
    assert [r.ue_service_id for r in await backend.load_registrations()] == [odd]
    assert [i.seq for i in await backend.pending_for(odd)] == [seq]
    assert (found := await backend.find(odd, odd)) is not None and found.seq == seq
    assert sorted(await backend.recipients_with_pending()) == sorted([odd, odd + "x"])
    assert await backend.load_records(odd, DedupRecord) == [record(odd)]
    assert await backend.take_report_route(odd, odd) is not None


async def test_two_nodes_on_one_prefix_never_share_a_seq() -> None:
    url = f"{session_server().url}?prefix={fresh_prefix()}"
    one, two = open_backend(url), open_backend(url)
    assert isinstance(one, NatsBackend) and isinstance(two, NatsBackend)
    await one.start()
    await two.start()
    try:
        assert one.generation != two.generation
        seqs = {await one.enqueue(item(f"a{i}")) for i in range(20)}
        seqs |= {await two.enqueue(item(f"b{i}")) for i in range(20)}
        assert len(seqs) == 40
        # dedup across nodes: the second node gets the first node's answer
        assert await one.enqueue_once(item("d"), record("d", b"one"), T0) is None
        assert await two.enqueue_once(item("d"), record("d", b"two"), T0) == record(
            "d", b"one"
        )
        # KV state written by one node is read by the other at once
        await one.put_credential("ue-z", b"z")
        assert await two.get_credential("ue-z") == b"z"
    finally:
        await one.aclose()
        await two.aclose()


# ---------------------------------------------------------------- URL and connection


def test_url_options() -> None:
    options = parse_url(
        "nats://app:p%40ss@10.0.0.1:4222,10.0.0.2:4222?prefix=prod_1&replicas=3"
        "&creds=/etc/app.creds&tls_ca=/etc/ca.pem&connect_timeout=2&dup_window=60"
    )
    assert options.servers == ("nats://10.0.0.1:4222", "nats://10.0.0.2:4222")
    assert (options.user, options.password) == ("app", "p@ss")
    assert (options.prefix, options.replicas, options.creds) == (
        "prod_1",
        3,
        "/etc/app.creds",
    )
    assert (options.tls_ca, options.connect_timeout, options.dup_window) == (
        "/etc/ca.pem",
        2.0,
        60.0,
    )
    assert parse_url("tls://tok@h:4222").servers == ("tls://h:4222",)
    assert parse_url("tls://tok@h:4222").token == "tok"
    assert parse_url("nats://h?tls=1").tls
    assert parse_url("nats://h").replicas == 1
    assert "p%40ss" not in repr(open_backend("nats://app:p%40ss@h:1"))
    assert StorageConfig(url="nats://127.0.0.1:4222").url.startswith("nats://")


@pytest.mark.parametrize(
    "url",
    [
        "nats://",
        "nats://h?replicas=0",
        "nats://h?replicas=x",
        "nats://h?prefix=a.b",
        "nats://h?colour=blue",
        "nats://h?tls_cert=/c.pem",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^storage\.url: "):
        open_backend(url)


async def test_unreachable_server_fails_fast_with_a_hint() -> None:
    from tests.storage.nats_server import free_port

    backend = open_backend(f"nats://127.0.0.1:{free_port()}?connect_timeout=1")
    with pytest.raises(
        StorageUnavailable, match=r"no server answered.*nats-server -js"
    ):
        await backend.start()
    await backend.aclose()


async def test_user_and_password_from_the_url(tmp_path: Path) -> None:
    server = NatsServer(
        require_binary("nats-server"),
        tmp_path / "js",
        args=("--user", "app", "--pass", "s3cret"),
    )
    server.start()
    try:
        good = open_backend(f"nats://app:s3cret@127.0.0.1:{server.port}")
        await good.start()
        await good.put_credential("ue", b"d")
        assert await good.list_credentials() == ["ue"]
        await good.aclose()
        bad = open_backend(
            f"nats://app:wrong@127.0.0.1:{server.port}?connect_timeout=1"
        )
        with pytest.raises(StorageUnavailable):
            await bad.start()
        await bad.aclose()
    finally:
        server.stop()


# ---------------------------------------------------------------- request path


async def test_requests_answer_in_flight_time_out_and_report_no_responders() -> None:
    """The backend's own request path (storage.nats.pipe): many requests in
    flight on one reply subscription, answers matched to their requests, a
    request nobody answers fails after the timeout (sweeper, no timer per
    request), no responders and a closed connection are reported."""
    import asyncio

    import nats
    import nats.errors

    from msgin5g.storage.nats.pipe import Requests

    client = await nats.connect(session_server().url)
    try:

        async def echo(msg: object) -> None:
            assert hasattr(msg, "respond") and hasattr(msg, "data")
            await msg.respond(b'{"seq":%s,"duplicate":true}' % msg.data)

        silent = await client.subscribe("t.silent")
        await client.subscribe("t.echo", cb=echo)
        requests = Requests(client, timeout=1.5)
        await requests.start()
        futures = [await requests.send("t.echo", b"%d" % n) for n in range(200)]
        replies = await asyncio.gather(*futures)
        assert [r.seq for r in replies] == list(range(200))
        assert all(r.duplicate for r in replies) and requests.pending == 0
        # not urgent: leaves with the next flush, at the latest LAZY_FLUSH later
        lazy = await requests.send("t.echo", b"7", {"K": "v"}, urgent=False)
        assert (await lazy).seq == 7
        await requests.post("t.echo", b"8")  # no answer awaited
        with pytest.raises(nats.errors.MaxPayloadError):
            await requests.send("t.echo", b"x" * (client.max_payload + 1))

        with pytest.raises(nats.errors.NoRespondersError):
            await requests.request("t.nobody", b"")
        with pytest.raises(nats.errors.TimeoutError):
            await requests.request("t.silent", b"")
        assert requests.pending == 0
        waiting = await requests.send("t.silent", b"")
        requests.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await waiting
        await silent.unsubscribe()
    finally:
        await client.close()
