"""Which backend a settings object names: the local SQLite file or Redis Streams."""

from __future__ import annotations

from pathlib import Path

from swarmd.config import Settings, resolve_state_dir
from swarmd.errors import ConfigError
from swarmd.queue.base import QueueBackend


def open_backend(
    settings: Settings,
    state_dir: Path | None = None,
    *,
    blocking: bool = False,
    check_integrity: bool = False,
    read_only: bool = False,
) -> QueueBackend:
    """The backend a settings object names (not yet opened). ``blocking``: for a loop with
    nothing else to run, SQLite statements run on the loop's own thread (no hand-off).
    ``check_integrity``: the SQLite file is checked page by page when opened (a daemon's start).
    ``read_only``: an SQLite state is opened for reading only, and must exist (nothing is created:
    a mistyped state dir is an error, not a new empty state)."""
    if settings.backend == "redis":
        try:
            from swarmd.queue.redis.backend import RedisBackend  # noqa: PLC0415 - the redis extra is optional
        except ModuleNotFoundError as exc:
            if exc.name != "redis" and not (exc.name or "").startswith("redis."):
                raise
            raise ConfigError(
                "backend", "redis needs the redis extra, which is not installed: pip install 'swarmd[redis]'"
            ) from None
        return RedisBackend(settings.redis_url, prefix=settings.redis_prefix, queue=settings.queue)
    from swarmd.queue.sqlite.backend import SqliteBackend  # noqa: PLC0415
    from swarmd.storage.files import check_directory  # noqa: PLC0415
    from swarmd.storage.sqlite import Durability  # noqa: PLC0415

    directory = state_dir or resolve_state_dir(settings.state_dir)
    if read_only:
        return SqliteBackend(directory, inline=blocking, read_only=True)
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_directory(directory)  # a producer trusts the state dir no more than the daemon does
    return SqliteBackend(directory, Durability(settings.durability), inline=blocking, check_integrity=check_integrity)
