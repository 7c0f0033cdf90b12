"""The C engine's Python side, and coapgen's self-test modes against the Python
reference (histogram buckets, p2p bodies, stamps read back from deliveries).

The self-tests run the compiled binary on stdin/stdout (no sockets); they are
skipped only when there is no C compiler (CI has gcc).
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import threading
from pathlib import Path

import pytest

from msgin5g.bench import native
from msgin5g.bench.load import p2p_body
from msgin5g.bench.options import BenchFailed
from msgin5g.bench.peer import delivered_payloads, payload_sent_at, stamp
from msgin5g.bench.stats import Counts, Histogram

needs_cc = pytest.mark.skipif(native.find_compiler() is None, reason="no C compiler")


@pytest.fixture(scope="module")
def coapgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        return native.build()


def selftest(binary: Path, mode: str, text: str) -> list[str]:
    result = subprocess.run(
        [str(binary), f"--selftest-{mode}"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.split("\n")[:-1]


# ------------------------------------------------------------------ build cache


def test_the_build_is_keyed_by_the_sources_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    one = native.binary_path(b"int main(void) { return 0; }\n")
    assert one == native.binary_path(b"int main(void) { return 0; }\n")
    assert one != native.binary_path(b"int main(void) { return 1; }\n")
    assert one.parent == tmp_path / "msgin5g"
    assert one.name.startswith("coapgen-") and len(one.name) == len("coapgen-") + 12


def test_the_cache_defaults_to_dot_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / ".cache" / "msgin5g"


def test_no_compiler_is_one_error_with_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CC", raising=False)
    assert native.find_compiler() is None
    with pytest.raises(BenchFailed) as failed:
        native.build()
    assert "C compiler" in str(failed.value)
    assert "apt-get install gcc" in (failed.value.hint() or "")


@needs_cc
def test_a_failed_build_says_so_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return }\n")
    with pytest.raises(BenchFailed, match="failed"):
        native.build(broken)
    assert list((tmp_path / "msgin5g").iterdir()) == []


@needs_cc
def test_concurrent_builds_agree_and_a_second_build_is_the_cached_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built: list[Path] = []
    threads = [
        threading.Thread(target=lambda: built.append(native.build())) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(built)) == 1
    path = built[0]
    assert path == native.binary_path(native.SOURCE.read_bytes())
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temps
    stamp_before = path.stat().st_mtime_ns
    assert native.build() == path
    assert path.stat().st_mtime_ns == stamp_before


@needs_cc
def test_the_source_builds_without_warnings(tmp_path: Path) -> None:
    compiler = native.find_compiler()
    assert compiler is not None
    for std in ("c99", "gnu11"):
        result = subprocess.run(
            [
                *(compiler, f"-std={std}", "-O2", "-Wall", "-Wextra"),
                *("-o", str(tmp_path / f"coapgen-{std}"), str(native.SOURCE), "-lm"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr


# ------------------------------------------------------------------ protocol


def test_the_configuration_is_one_setting_or_body_per_line() -> None:
    config = native.engine_config(
        mode="reg",
        window=4,
        rate=2500.0,
        size=48,
        store=False,
        t0=12.5,
        t_end=22.5,
        lanes=[(7, 65535, [b'{"a":1}', b'{"a":2}']), (9, 65536 + 3, [b'{"b":1}'])],
    )
    assert config.decode().split("\n") == [
        "coapgen 1",
        "mode reg",
        "window 4",
        "rate 2500.0",
        "size 48",
        "store 0",
        "t0 12.5",
        "t_end 22.5",
        "lane 7 2 65535",
        '{"a":1}',
        '{"a":2}',
        "lane 9 1 3",
        '{"b":1}',
        "go",
        "",
    ]


def test_a_body_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="one line"):
        native.engine_config(
            mode="p2p",
            window=1,
            rate=0,
            size=48,
            store=False,
            t0=0.0,
            t_end=1.0,
            lanes=[(3, 0, [b"{\n}"])],
        )


def test_live_lines_become_published_counts() -> None:
    assert native.parse_live(b"live 10 1 8 9 0\n") == {
        "sent": 10.0,
        "refused": 1.0,
        "received": 8.0,
        "arrived": 9.0,
        "timeouts": 0.0,
    }
    assert native.parse_live(b"final {}\n") is None
    assert native.parse_live(b"live 1 2\n") is None


def test_the_final_line_becomes_counts() -> None:
    counts = Counts(sent=5, accepted=4, refused=1, received=4, timeouts=0)
    counts.latency.add(0.002)
    counts.answer.add(0.001)
    line = b"final " + json.dumps(counts.to_wire()).encode() + b"\n"
    parsed = native.parse_final(line)
    assert parsed is not None
    assert parsed.to_wire() == counts.to_wire()
    assert native.parse_final(b"live 1 2 3 4 5\n") is None


# ------------------------------------------------------------------ the binary


def test_histograms_have_the_python_buckets(coapgen: Path) -> None:
    rng = random.Random(13)
    latencies = [rng.lognormvariate(-6, 3) for _ in range(5000)]
    latencies += [0.0, -1.0, 1e-6, 1.0000001e-6, 1e-3, 0.5, 150.0, 1e9]
    reference = Histogram()
    for seconds in latencies:
        reference.add(seconds)
    (line,) = selftest(coapgen, "histogram", "".join(f"{x!r}\n" for x in latencies))
    produced = Histogram.from_wire(json.loads(line))
    assert produced.buckets == reference.buckets
    assert produced.max_s == reference.max_s
    merged = Histogram()
    merged.merge(produced)
    merged.merge(reference)
    assert merged.count == 2 * len(latencies)


def test_p2p_bodies_are_the_python_ones(coapgen: Path) -> None:
    prefix = (
        b'{"messageType":"MSG","originatingUeServiceId":"bench-00001",'
        b'"recipientUeServiceId":"bench-00002","messageId":"bench-00001-ab12-'
    )
    rng = random.Random(5)
    cases = [
        (size, store, rng.randrange(1, 10**12), rng.uniform(0, 1e6))
        for size in (8, 9, 10, 11, 12, 48, 100, 4000)
        for store in (False, True)
    ]
    lines = "".join(
        f"{size} {int(store)} {serial} {at!r} {prefix.decode()}\n"
        for size, store, serial, at in cases
    )
    produced = selftest(coapgen, "body", lines)
    expected = [
        p2p_body(prefix, serial, stamp(size, at), store).decode()
        for size, store, serial, at in cases
    ]
    assert produced == expected


def test_stamps_are_read_back_like_the_python_receiver(coapgen: Path) -> None:
    rng = random.Random(7)

    def msg(payload: bytes) -> bytes:
        return b'{"messageType":"MSG","payload":"%s"}' % base64.b64encode(payload)

    bodies = [msg(stamp(size, rng.uniform(0, 1e5))) for size in (8, 9, 10, 48, 200)]
    items = b",".join(
        b'{"messageId":"m%d","payload":"%s"}'
        % (i, base64.b64encode(stamp(20, rng.uniform(0, 10))))
        for i in range(5)
    )
    bodies.append(b'{"messageType":"AGGMSG","aggregatedMessages":[%s]}' % items)
    spaced = {"messageType": "MSG", "payload": base64.b64encode(stamp(30, 2.5))}
    bodies.append(json.dumps(spaced, default=bytes.decode).encode())  # ": " spacing
    bodies.append(msg(b"1234567"))  # too short to carry a send time
    bodies.append(b'{"messageType":"MSG","messageId":"x"}')
    produced = selftest(coapgen, "payloads", b"\n".join(bodies).decode() + "\n")
    for body, line in zip(bodies, produced, strict=True):
        expected = [payload_sent_at(p) for p in delivered_payloads(body)]
        assert [float(x) for x in line.split()] == [
            x for x in expected if x is not None
        ]
