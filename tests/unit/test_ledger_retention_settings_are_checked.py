"""The archive and anchor settings: durations read as such, bad values refused by key, and
where segments go by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.config import archive_path, duration_seconds, load_settings
from swarmd.errors import ConfigError


def _load(**environ: str) -> object:
    return load_settings(environ={f"SWARMD_{key.upper()}": value for key, value in environ.items()})


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("30d", 2592000.0)])
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ledger_retention", "30x"),
        ("ledger_retention", "0d"),
        ("checkpoint_interval", "0s"),
        ("ledger_max_entries", "0"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _load(**{key: value})


def test_defaults_keep_everything_live_and_checkpoint_every_five_minutes() -> None:
    settings = load_settings(environ={})
    assert (settings.ledger_retention, settings.ledger_max_entries, settings.archive) == (None, None, True)
    assert duration_seconds(settings.checkpoint_interval) == 300.0


def test_segments_go_to_archive_in_the_state_dir_unless_told_otherwise(tmp_path: Path) -> None:
    assert archive_path(load_settings(environ={}), tmp_path) == tmp_path / "archive"
    elsewhere = load_settings(environ={"SWARMD_ARCHIVE_DIR": "/srv/ledger-archive"})
    assert archive_path(elsewhere, tmp_path) == Path("/srv/ledger-archive")
    relative = load_settings(environ={"SWARMD_ARCHIVE_DIR": "old"})
    assert archive_path(relative, tmp_path) == tmp_path / "old"
