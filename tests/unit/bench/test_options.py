"""`msgin5g bench` arguments: the parser, option checks, server addresses."""

import pytest

from msgin5g.bench.options import BenchOptions, parse_coap_uri, parse_http_url
from msgin5g.cli.bench import _options
from msgin5g.cli.main import build_parser, main
from msgin5g.errors import ConfigError


def parse(*argv: str) -> BenchOptions:
    args = build_parser().parse_args(["bench", *argv])
    options: BenchOptions = _options(args)
    return options


def test_defaults_are_a_closed_loop_of_100_ues_for_10_seconds() -> None:
    options = parse("p2p", "--secret", "s")
    assert options.mode == "p2p"
    assert options.server == "coap://127.0.0.1:5683"
    assert (options.ues, options.rate, options.duration, options.workers) == (
        100,
        0,
        10,
        1,
    )
    assert options.window == 1
    assert options.names()[:2] == ["bench-00001", "bench-00002"]
    assert len(options.names()) == 100


def test_every_option_reaches_the_run() -> None:
    argv = "a2p --server coap://10.0.0.1:5684 --http http://10.0.0.1:8080 --ues 50"
    argv += " --rate 5000 --duration 3 --workers 2 --secret s --prefix load-"
    argv += " --connections 4 --h2c --store --as my-as --token t0k --size 100"
    argv += " --warmup 0.5 --drain 2"
    options = parse(*argv.split())
    assert options.http == "http://10.0.0.1:8080"
    assert (options.connections, options.h2c, options.store) == (4, True, True)
    assert (options.as_id, options.token, options.prefix) == ("my-as", "t0k", "load-")
    assert (options.rate, options.workers, options.size) == (5000, 2, 100)
    assert (options.warmup, options.drain) == (0.5, 2)
    assert options.names()[0] == "load-00001"
    assert parse("p2p", "--secret", "s", "--window", "3").window == 3


def test_reg_has_sockets_and_fanout_a_group() -> None:
    assert parse("reg", "--secret", "s", "--sockets", "8").sockets == 8
    assert (
        parse("fanout", "--secret", "s", "--http", "http://h:1", "--group", "g").group
        == "g"
    )


@pytest.mark.parametrize("mode", ["a2p", "fanout"])
def test_rest_modes_need_the_http_url(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", mode, "--secret", "s"])
    assert exc.value.code == 2
    assert "--http" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ues": 1}, "--ues must be at least 2"),
        ({"rate": -1}, "--rate must not be negative"),
        ({"duration": 0}, "--duration must be positive"),
        ({"workers": 0}, "--workers must be 1-64"),
        ({"workers": 5, "ues": 4}, "--workers must not exceed --ues"),
        ({"window": 0}, "at least 1"),
        ({"size": 4}, "--size must be 8-4000"),
        ({"secret": ""}, "--secret is required"),
        ({"mode": "x"}, "mode must be one of"),
        ({"engine": "rust"}, "--engine must be one of python, c"),
        ({"mode": "reg", "engine": "c"}, None),
    ],
)
def test_bad_options_are_one_clear_error(
    changes: dict[str, object], message: str | None
) -> None:
    values: dict[str, object] = {
        "mode": "p2p",
        "server": "coap://h",
        "ues": 4,
        "secret": "s",
    }
    values.update(changes)
    if message is None:
        BenchOptions(**values)  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError, match=message):
        BenchOptions(**values)  # type: ignore[arg-type]


def test_engine_c_reaches_the_run_and_defaults_to_python() -> None:
    assert parse("p2p", "--secret", "s").engine == "python"
    assert parse("p2p", "--secret", "s", "--engine", "c").engine == "c"
    assert parse("reg", "--secret", "s", "--engine", "c").engine == "c"


@pytest.mark.parametrize("mode", ["fanout", "a2p"])
def test_engine_c_is_refused_where_there_is_no_c_engine(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", mode, "--secret", "s", "--http", "http://h:1", "--engine", "c"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"--engine c: {mode} has no C engine (p2p and reg do)" in err
    assert f"hint: see: msgin5g bench {mode} --help" in err
    assert "Traceback" not in err


def test_cli_reports_a_missing_secret_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MSGIN5G_SECRET", raising=False)
    assert main(["bench", "p2p", "--ues", "2"]) == 1
    err = capsys.readouterr().err
    assert "--secret is required" in err
    assert "hint: see: msgin5g bench p2p --help" in err
    assert "Traceback" not in err


def test_coap_uri_is_resolved_once() -> None:
    assert parse_coap_uri("coap://127.0.0.1:5684") == ("127.0.0.1", 5684)
    assert parse_coap_uri("coap://[::1]") == ("::1", 5683)
    assert parse_coap_uri("coap://localhost:7")[1] == 7


@pytest.mark.parametrize("uri", ["http://h:1", "coap://", "coap://h:port", "h:5683"])
def test_bad_coap_uris(uri: str) -> None:
    with pytest.raises(ConfigError, match="--server"):
        parse_coap_uri(uri)


def test_http_url() -> None:
    assert parse_http_url("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http_url("http://h") == ("h", 80)
    with pytest.raises(ConfigError, match="cleartext"):
        parse_http_url("https://h:443")
