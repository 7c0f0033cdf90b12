"""The supervisor of ``msgin5g serve --workers N`` (msgin5g.server.workers).

Pure parts (naming, back-off, the worker command line) directly; the supervisor
itself with real child processes of a stand-in worker
(:mod:`tests.unit.server.fake_worker`) that opens no socket.
"""

import asyncio
import json
import os
import socket
from collections import deque
from pathlib import Path

import pytest

from msgin5g.config import load_config
from msgin5g.errors import ConfigError, ConnectError, WorkerError
from msgin5g.server.worker_link import read_status
from msgin5g.server.workers import (
    RestartPolicy,
    Supervisor,
    WorkerLink,
    WorkerPlan,
    WorkersReady,
    default_node_id,
    describe_exit,
    plan_workers,
    resolve_workers,
    worker_node_id,
)

NATS = {"storage.url": "nats://127.0.0.1:4222", "cluster.workers": "2"}


# ------------------------------------------------------------------ pure parts


def test_workers_auto_is_one_per_core() -> None:
    assert resolve_workers(3, cpus=8) == 3
    assert resolve_workers(0, cpus=8) == 8
    assert resolve_workers(0, cpus=0) == 1
    assert resolve_workers(0) >= 1


def test_node_ids_from_the_host_name_are_valid_config_values() -> None:
    assert default_node_id("edge-7.example.org") == "edge-7-example-org"
    assert default_node_id("...") == "node"
    assert worker_node_id("edge-7", 1) == "edge-7-w1"
    long = worker_node_id("x" * 80, 12)
    assert len(long) == 64
    assert long.endswith("-w12")
    for node in ("edge-7-example-org-w0", long):
        load_config(None, {}, {**NATS, "cluster.node_id": node})


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None) == "not started"


def test_restart_back_off_doubles_and_gives_up_on_a_crash_loop() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=3.0, max_restarts=4, window=60)
    deaths: deque[float] = deque()
    delays = [policy.next_delay(deaths, t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert delays == [0.5, 1.0, 2.0, 3.0]
    assert policy.next_delay(deaths, 4.0) is None  # 5 deaths within 60 s


def test_restart_back_off_forgets_old_deaths() -> None:
    policy = RestartPolicy(first_delay=0.5, max_restarts=2, window=10)
    deaths: deque[float] = deque()
    assert policy.next_delay(deaths, 0.0) == 0.5
    assert policy.next_delay(deaths, 5.0) == 1.0
    assert policy.next_delay(deaths, 100.0) == 0.5  # the first two are forgotten
    assert list(deaths) == [100.0]


def test_worker_command_line() -> None:
    plan = WorkerPlan(
        node_ids=("n-w0", "n-w1"),
        coap=("::", 5683),
        http=("127.0.0.1", 8080),
        arguments=("--log-format", "text", "serve", "--set", "a.b=c"),
        python="/py",
    )
    assert plan.command(1, 5, 6) == [
        "/py",
        "-m",
        "msgin5g",
        "--log-format",
        "text",
        "serve",
        "--set",
        "a.b=c",
        "--coap",
        "[::]:5683",
        "--http",
        "127.0.0.1:8080",
        "--set",
        "coap.reuse_port=true",
        "--set",
        "cluster.workers=1",
        "--set",
        "cluster.node_id=n-w1",
        "--worker-fds",
        "5,6",
        "--set",
        "rest.reuse_port=true",
    ]
    no_http = WorkerPlan(("n-w0",), ("0.0.0.0", 1), None, ("serve",))
    assert "--http" not in no_http.command(0, 1, 2)
    assert "rest.reuse_port=true" not in no_http.command(0, 1, 2)


def test_plan_resolves_port_0_once_and_names_the_workers() -> None:
    config = load_config(
        None,
        {},
        {**NATS, "coap.bind": "127.0.0.1:0", "rest.bind": "127.0.0.1:0"},
    )
    plan = plan_workers(config, ["serve"], hostname="box.lan")
    assert plan.node_ids == ("box-lan-w0", "box-lan-w1")
    assert plan.coap[1] > 0
    assert plan.http is not None
    assert plan.http[1] > 0
    named = load_config(
        None,
        {},
        {
            **NATS,
            "cluster.node_id": "edge",
            "rest.enabled": "false",
            "coap.bind": "127.0.0.1:0",
            "cluster.workers": "0",
        },
    )
    plan = plan_workers(named, ["serve"], cpus=3)
    assert plan.node_ids == ("edge-w0", "edge-w1", "edge-w2")
    assert plan.http is None


def test_plan_refuses_a_port_in_use_even_by_a_reuse_port_group() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = load_config(
            None, {}, {**NATS, "coap.bind": f"127.0.0.1:{port}", "rest.enabled": "0"}
        )
        with pytest.raises(ConnectError, match="Address already in use"):
            plan_workers(config, ["serve"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as web:
        web.bind(("127.0.0.1", 0))
        web.listen()
        port = web.getsockname()[1]
        config = load_config(
            None,
            {},
            {**NATS, "coap.bind": "127.0.0.1:0", "rest.bind": f"127.0.0.1:{port}"},
        )
        with pytest.raises(ConnectError, match=f"HTTP bind 127.0.0.1:{port}"):
            plan_workers(config, ["serve"])


def test_more_than_one_worker_on_sqlite_is_refused_by_the_configuration() -> None:
    with pytest.raises(ConfigError, match="more than one worker needs storage on NATS"):
        load_config(None, {}, {"cluster.workers": "2"})


def test_worker_link_reports_through_the_status_pipe() -> None:
    for send, expected in (
        (
            lambda link: link.ready(("::1", 5683), ("127.0.0.1", 80)),
            {"ready": True, "coap": ["::1", 5683], "http": ["127.0.0.1", 80]},
        ),
        (
            lambda link: link.fail("port taken", None),
            {"error": "port taken", "hint": None},
        ),
    ):
        status_r, status_w = os.pipe()
        link = WorkerLink.parse(f"{status_w},0")
        send(link)
        send(link)  # a second report is not sent (the pipe is closed)
        assert read_status(status_r) == expected
        # after a report, an error is the worker's own to print
        assert link.fail("later", None) is False
    with pytest.raises(ConfigError, match="STATUS,LIFELINE"):
        WorkerLink.parse("7")


def test_status_end_of_file_or_garbage_is_no_report() -> None:
    for data in (b"", b"not json\n", b"[1]\n"):
        status_r, status_w = os.pipe()
        os.write(status_w, data)
        os.close(status_w)
        assert read_status(status_r) is None


async def test_worker_stops_when_its_lifeline_closes() -> None:
    lifeline_r, lifeline_w = os.pipe()
    link = WorkerLink(-1, lifeline_r)
    stop = asyncio.Event()
    link.watch_parent(stop)
    await asyncio.sleep(0.05)
    assert not stop.is_set()
    os.close(lifeline_w)
    await asyncio.wait_for(stop.wait(), 10)
    os.close(lifeline_r)


# ------------------------------------------ the supervisor with real processes


class Run:
    """A supervisor of fake workers running in the test's loop."""

    def __init__(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        count: int,
        modes: dict[str, str] | None = None,
        *,
        policy: RestartPolicy | None = None,
        grace: float = 30.0,
    ) -> None:
        self.log = tmp_path / "starts.log"
        monkeypatch.setenv("FAKE_WORKER_LOG", str(self.log))
        monkeypatch.setenv("FAKE_WORKER_PLAN", json.dumps(modes or {}))
        plan = WorkerPlan(
            node_ids=tuple(f"t-w{i}" for i in range(count)),
            coap=("127.0.0.1", 5683),
            http=None,
            arguments=(),
            module="tests.unit.server.fake_worker",
        )
        self.announced: list[WorkersReady] = []
        self.supervisor = Supervisor(
            plan,
            policy=policy or RestartPolicy(first_delay=0.05, max_delay=0.2),
            grace=grace,
            announce=self.announced.append,
        )
        self.task: asyncio.Task[int] = asyncio.create_task(self.supervisor.run())

    def starts(self) -> list[tuple[str, int]]:
        if not self.log.exists():
            return []
        return [
            (node, int(pid))
            for node, pid in (
                line.split() for line in self.log.read_text().splitlines()
            )
        ]

    async def until(self, condition: "object", what: str) -> None:
        for _ in range(600):  # bounded: 60 s
            if callable(condition) and condition():
                return
            if self.task.done():
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"not reached: {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not reaped yet counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_workers_start_in_order_are_announced_and_stop_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, 3)
    await run.until(lambda: run.announced, "announcement")
    assert [node for node, _ in run.starts()] == ["t-w0", "t-w1", "t-w2"]
    ready = run.announced[0]
    assert ready.node_ids == ("t-w0", "t-w1", "t-w2")
    assert ready.coap == ("127.0.0.1", 5683)
    assert list(ready.pids) == [pid for _, pid in run.starts()]
    run.supervisor.stop()
    assert await asyncio.wait_for(run.task, 60) == 0
    assert not any(_alive(pid) for pid in ready.pids)


async def test_a_dead_worker_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, 2, {"t-w1": "crash-once"})
    await run.until(lambda: len(run.starts()) == 3, "a restart of t-w1")
    await run.until(lambda: len(run.supervisor.pids) == 2, "two workers running")
    assert [node for node, _ in run.starts()] == ["t-w0", "t-w1", "t-w1"]
    first_w1 = run.starts()[1][1]
    assert first_w1 not in run.supervisor.pids
    run.supervisor.stop()
    assert await asyncio.wait_for(run.task, 60) == 0


async def test_a_crash_loop_stops_everything_with_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = RestartPolicy(first_delay=0.01, max_delay=0.05, max_restarts=2, window=600)
    run = Run(tmp_path, monkeypatch, 2, {"t-w1": "crash"}, policy=policy)
    with pytest.raises(
        WorkerError,
        match=r"worker t-w1 died 3 times within 600 s \(last: exit status 7\)",
    ):
        await asyncio.wait_for(run.task, 60)
    assert [node for node, _ in run.starts()] == ["t-w0"] + ["t-w1"] * 3
    assert not any(_alive(pid) for _, pid in run.starts())


@pytest.mark.parametrize(
    ("mode", "message", "hint"),
    [
        ("fail", "worker t-w1: port taken", "free it"),
        (
            "die",
            r"worker t-w1 exited during start-up \(exit status 3\)",
            "messages above",
        ),
    ],
)
async def test_a_worker_that_cannot_start_stops_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, message: str, hint: str
) -> None:
    run = Run(tmp_path, monkeypatch, 3, {"t-w1": mode})
    with pytest.raises(WorkerError, match=message) as caught:
        await asyncio.wait_for(run.task, 60)
    assert hint in (caught.value.hint() or "")
    assert [node for node, _ in run.starts()] == ["t-w0", "t-w1"]  # w2 never started
    assert not run.announced
    assert not any(_alive(pid) for _, pid in run.starts())


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, 1, {"t-w0": "stubborn"}, grace=0.5)
    await run.until(lambda: run.announced, "announcement")
    run.supervisor.stop()
    assert await asyncio.wait_for(run.task, 60) == 0
    assert not _alive(run.starts()[0][1])


def test_cli_workers_and_node_id_reach_the_configuration() -> None:
    from msgin5g.cli.common import server_config
    from msgin5g.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--workers",
            "auto",
            "--node-id",
            "edge",
            "--storage",
            "nats://h:4222",
        ]
    )
    config = server_config(args)
    assert (config.cluster.workers, config.cluster.node_id) == (0, "edge")
    assert server_config(parser.parse_args(["serve"])).cluster.workers == 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--workers", bad])
    with pytest.raises(ConfigError, match="more than one worker"):
        server_config(parser.parse_args(["serve", "--workers", "2"]))
