"""`msgin5g bench` against a real `msgin5g serve` process (real UDP, real HTTP).

No timing assertions: each run is short and the checks are on counts (every
message sent in the window arrived, nothing lost) and on the summary's shape.
"""

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, msgin5g

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "bench-e2e-secret"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp(port: int) -> None:
    """Bounded polling until the REST port accepts connections."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def bench_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    tmp = tmp_path_factory.mktemp("bench")
    http_port = free_tcp_port()
    # The per-UE submission limit (limits.submit_rate, 2,000/s) is lifted: a
    # closed loop of 4 UEs passes it on a fast machine (CI did: 1,872 refused);
    # test_the_per_ue_rate_limit_is_reported_as_its_cause checks the limit.
    srv = ServerProcess(
        tmp / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--set",
            "limits.submit_rate=0",
            "--http",
            f"127.0.0.1:{http_port}",
        ),
    )
    provision = msgin5g(
        "bench", "provision", "--storage", srv.storage, "--ues", "8", "--secret", SECRET
    )
    assert "imported 8 UEs" in provision.stderr
    srv.start()
    wait_tcp(http_port)
    yield srv, f"http://127.0.0.1:{http_port}"
    err = srv.stop()
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    """A server that lets each UE submit 20 messages/s (a burst of 10)."""
    tmp = tmp_path_factory.mktemp("limited")
    srv = ServerProcess(
        tmp / "msgin5g.db",
        extra=("--set", "limits.submit_rate=20", "--set", "limits.submit_burst=10"),
    )
    provision = msgin5g(
        "bench", "provision", "--storage", srv.storage, "--ues", "4", "--secret", SECRET
    )
    assert "imported 4 UEs" in provision.stderr
    srv.start()
    yield srv, ""
    err = srv.stop()
    assert "Traceback" not in err, err


def bench(
    server: tuple[ServerProcess, str], mode: str, options: str
) -> dict[str, object]:
    """``msgin5g bench MODE --json`` for 2 s against the module's server."""
    srv, http = server
    where = (
        ["--server", srv.url, "--http", http]
        if mode in ("a2p", "fanout")
        else ["--server", srv.url]
    )
    result = msgin5g(
        "bench",
        mode,
        *where,
        "--duration",
        "2",
        *options.split(),
        "--secret",
        SECRET,
        "--json",
        timeout=120,
    )
    summary: dict[str, object] = json.loads(result.stdout)
    assert summary["mode"] == mode
    return summary


def delivered(summary: dict[str, object]) -> int:
    received = summary["received"]
    assert isinstance(received, int)
    return received


def test_p2p_closed_loop_delivers_everything(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(bench_server, "p2p", "--ues 4")
    assert delivered(summary) > 0
    assert summary["lost"] == 0
    assert summary["refused"] == 0
    assert summary["sent"] == summary["received"]
    assert summary["p50_ms"] is not None and summary["p99_ms"] is not None
    assert (
        0
        < summary["p50_ms"]
        <= summary["p90_ms"]
        <= summary["p99_ms"]
        <= summary["max_ms"]
    )  # type: ignore[operator]


def test_p2p_paced_two_processes(bench_server: tuple[ServerProcess, str]) -> None:
    summary = bench(bench_server, "p2p", "--ues 8 --workers 2 --rate 100")
    assert summary["workers"] == 2
    assert summary["offered_rate"] == 100
    assert delivered(summary) > 0
    assert summary["lost"] == 0


def test_reg_counts_successful_registrations(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(bench_server, "reg", "--ues 8 --sockets 2 --window 4")
    assert delivered(summary) > 0
    assert summary["received"] == summary["accepted"] == summary["sent"]
    assert summary["lost"] == 0


def test_a2p_through_the_rest_api(bench_server: tuple[ServerProcess, str]) -> None:
    summary = bench(bench_server, "a2p", "--ues 4 --connections 2")
    assert delivered(summary) > 0
    assert summary["lost"] == 0
    assert summary["answer_p99_ms"] is not None  # the HTTP answers were timed


def test_fanout_to_a_group_made_through_ss_gm(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(bench_server, "fanout", "--ues 8 --workers 2")
    rounds = summary["extra"]["rounds"]  # type: ignore[index]
    assert rounds >= 1
    assert delivered(summary) == 7 * rounds  # every member but the sender
    assert summary["lost"] == 0


needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler for --engine c",
)


@needs_cc
def test_p2p_with_the_c_engine_delivers_everything(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(bench_server, "p2p", "--ues 4 --window 2 --engine c")
    assert delivered(summary) > 0
    assert summary["lost"] == 0
    assert summary["refused"] == 0
    assert summary["sent"] == summary["received"] == summary["accepted"]
    assert summary["p50_ms"] is not None
    assert summary["answer_p50_ms"] is not None
    assert summary["generator_us_per_unit"] > 0  # type: ignore[operator]


@needs_cc
def test_p2p_paced_with_the_c_engine_in_two_processes(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(
        bench_server, "p2p", "--ues 8 --workers 2 --rate 200 --store --engine c"
    )
    assert summary["workers"] == 2
    assert delivered(summary) > 0
    assert summary["lost"] == 0
    assert summary["received"] == summary["sent"]


@needs_cc
def test_reg_with_the_c_engine_counts_successful_registrations(
    bench_server: tuple[ServerProcess, str],
) -> None:
    summary = bench(bench_server, "reg", "--ues 8 --sockets 2 --window 4 --engine c")
    assert delivered(summary) > 0
    assert summary["received"] == summary["accepted"] == summary["sent"]
    assert summary["lost"] == 0


@pytest.mark.parametrize("engine", ["python", pytest.param("c", marks=needs_cc)])
def test_the_per_ue_rate_limit_is_reported_as_its_cause(
    limited_server: tuple[ServerProcess, str], engine: str
) -> None:
    summary = bench(limited_server, "p2p", f"--ues 2 --window 2 --engine {engine}")
    refused = summary["refused"]
    assert isinstance(refused, int) and refused > 0
    # every refusal is the rate limit's, and refused ones are not lost
    assert summary["refusals"] == {"SERVER_CONGESTION": refused}
    assert summary["lost"] == 0
    assert summary["sent"] == refused + delivered(summary)
    # a refused lane waits 50 ms before its next MSG (no hammering): 4 lanes in
    # 2 s, refused at most ~4 * 41 times (~150 seen); the bound allows timers
    # up to 10 ms early (libuv's cached loop time); without the wait: thousands
    assert refused <= 4 * (2 / 0.04 + 1)
    warnings = summary["warnings"]
    assert isinstance(warnings, list)
    assert any("limits.submit_rate" in text for text in warnings)


def short_p2p(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``msgin5g bench p2p`` for 1 s over 2 UEs, its table on stdout."""
    return msgin5g(
        "bench",
        "p2p",
        "--duration",
        "1",
        "--ues",
        "2",
        "--secret",
        SECRET,
        *args,
        check=check,
        timeout=60,
    )


def test_the_table_names_the_cause_of_refusals(
    limited_server: tuple[ServerProcess, str],
) -> None:
    result = short_p2p("--server", limited_server[0].url)
    refused = [
        line for line in result.stdout.splitlines() if line.startswith("refused")
    ]
    assert len(refused) == 1 and "SERVER_CONGESTION" in refused[0], result.stdout
    assert "warning:" in result.stdout and "--ues" in result.stdout


def run_failing(*args: str) -> str:
    result = short_p2p(*args, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    return result.stderr


def test_unprovisioned_ues_fail_in_one_line_with_a_hint(
    bench_server: tuple[ServerProcess, str],
) -> None:
    err = run_failing("--server", bench_server[0].url, "--prefix", "nobody-")
    assert "refused the REG of nobody-00001" in err
    assert "hint: provision the bench UEs first" in err


def test_no_server_is_reported_in_seconds(tmp_path: Path) -> None:
    port = ServerProcess(tmp_path / "x.db").port  # a free port nobody listens on
    err = run_failing("--server", f"coap://127.0.0.1:{port}")
    assert "no answer from" in err
    assert "hint:" in err
