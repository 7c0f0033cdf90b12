"""Configuration: defaults, TOML, MSGIN5G_* variables, overrides, validation."""

from pathlib import Path

import pytest

from msgin5g.config import load_config, parse_hostport
from msgin5g.errors import ConfigError

EXAMPLE = Path(__file__).parents[3] / "examples" / "msgin5g.toml"


def test_defaults_match_the_cli_contract() -> None:
    config = load_config()
    assert config.coap.address == ("0.0.0.0", 5683)
    assert config.storage.url == "sqlite:///./msgin5g.db"


def test_precedence_file_env_override(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[coap]\nbind = "127.0.0.1:7000"\n[delivery]\ndefault_ttl = 60\n')
    config = load_config(
        path,
        {"MSGIN5G_COAP": "127.0.0.1:7001", "MSGIN5G_STORAGE_URL": "memory:"},
        {"delivery.default_ttl": "30"},
    )
    assert config.coap.address == ("127.0.0.1", 7001)
    assert config.storage.url == "memory:"
    assert config.delivery.default_ttl == 30.0


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.coap.max_payload == 4096


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4:5", ("1.2.3.4", 5)),
        ("[::1]:9", ("::1", 9)),
        (":7", ("0.0.0.0", 7)),
        ("h", ("h", 5683)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"coap.nope": 1}, "coap.nope"),
        ({"coap.bind": "h:99999"}, "port"),
        ({"delivery.default_ttl": "abc"}, "delivery.default_ttl"),
        ({"delivery.default_ttl": "-1"}, "delivery.default_ttl"),
        ({"storage.url": "postgres://x"}, "storage.url"),
        ({"storage.commit_interval": "2"}, "storage.commit_interval"),
        ({"storage.writer_cache_mib": "0"}, "storage.writer_cache_mib"),
        ({"log.level": "LOUD"}, "log.level"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_values_name_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {}, overrides)


def test_unknown_section_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_config(path)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml")


def test_commit_interval_reaches_the_sqlite_writer(tmp_path: Path) -> None:
    from msgin5g.storage import open_backend

    config = load_config(None, {}, {"storage.commit_interval": "0.002"})
    assert config.storage.commit_interval == 0.002
    backend = open_backend(
        f"sqlite:///{tmp_path / 'x.db'}",
        commit_interval=config.storage.commit_interval,
    )
    assert backend._writer.commit_interval == 0.002  # type: ignore[attr-defined]
    default = open_backend(f"sqlite:///{tmp_path / 'y.db'}")
    assert default._writer.commit_interval == 0.0  # type: ignore[attr-defined]


def test_writer_cache_mib_reaches_the_sqlite_writer(tmp_path: Path) -> None:
    from msgin5g.storage import open_backend

    config = load_config(None, {}, {"storage.writer_cache_mib": "48"})
    assert config.storage.writer_cache_mib == 48
    backend = open_backend(
        f"sqlite:///{tmp_path / 'x.db'}",
        writer_cache_mib=config.storage.writer_cache_mib,
    )
    assert backend.writer_cache_mib == 48  # type: ignore[attr-defined]
    default = open_backend(f"sqlite:///{tmp_path / 'y.db'}")
    assert default.writer_cache_mib == 16  # type: ignore[attr-defined]
    assert load_config(None, {}, {}).storage.writer_cache_mib == 16  # same default
