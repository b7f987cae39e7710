"""A config value that would crash the daemon later (at start-up, at a reload, at the first
connection) is refused where it is read, naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.config import MAX_CONFIG_BYTES, load_settings
from swarmd.errors import ConfigError


def _load(tmp_path: Path, text: str | bytes) -> None:
    config = tmp_path / "swarmd.toml"
    if isinstance(text, str):
        config.write_text(text)
    else:
        config.write_bytes(text)
    load_settings(config_path=config, environ={})


def test_invalid_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 9\)") as error:
        _load(tmp_path, b"queue = '\xff'\n")
    assert error.value.source == str(tmp_path / "swarmd.toml")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("[agent.sleep]\nrate = inf", "agent.sleep.rate"),
        ("backoff_base = inf", "backoff_base"),
        ("backoff_cap = nan", "backoff_cap"),
        ("grace_seconds = 1e308", "grace_seconds"),
        ("[agent.echo]\ntimeout = 1e300", "agent.echo.timeout"),
    ],
)
def test_infinite_or_huge_numbers_name_their_key_and_file(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, line + "\n")
    assert "finite" in error.value.reason or "nan" in line  # nan already fails "> 0"
    assert error.value.key == key
    assert error.value.source == str(tmp_path / "swarmd.toml")


def test_an_endless_file_is_read_only_up_to_the_limit() -> None:
    with pytest.raises(ConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        load_settings(config_path=Path("/dev/zero"), environ={})


def test_a_missing_file_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(config_path=tmp_path / "nope.toml", environ={})
    assert str(error.value).count(str(tmp_path / "nope.toml")) == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:6379", "scheme 'http'"),
        ("127.0.0.1:6379", "is not one of"),
        ("redis://:6379/0", "has no host"),
        ("redis://127.0.0.1:6379/zero", "database 'zero' is not a number"),
    ],
)
def test_malformed_redis_urls_are_config_errors(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as error:
        load_settings(flags={"redis_url": url}, environ={})
    assert error.value.key == "redis_url"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:s3cret@127.0.0.1:6380/2",
        "redis://:pw@localhost",
        "unix:///run/redis.sock",
    ],
)
def test_valid_redis_urls_are_accepted(url: str) -> None:
    assert load_settings(flags={"redis_url": url}, environ={}).redis_url == url
