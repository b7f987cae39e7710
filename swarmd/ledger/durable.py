"""The durable ledger: SQLite (WAL), group commit, indices returned only after commit."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmd.errors import LedgerError
from swarmd.ledger.chain import StoredEntry, VerifyReport, canonical_record, verify
from swarmd.ledger.sqlite import append_records, read_entries
from swarmd.storage.sqlite import Durability, SqliteThread, connect, transaction


class DurableLedger:
    """A `Ledger` in an SQLite file.

    Appends made while a commit is running are gathered and written by the next one, in one
    transaction: many appends, one fsync. `append` returns only once its entry is committed.
    """

    def __init__(self, path: str | Path, durability: Durability = Durability.FULL) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, durability)
        self._thread = SqliteThread("swarmd-ledger")
        self._pending: list[tuple[str | None, bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def append(self, entry: Mapping[str, Any]) -> int:
        return await self.append_soon(entry)

    def append_soon(self, entry: Mapping[str, Any]) -> asyncio.Future[int]:
        """Queue an entry for the next group commit; the future resolves with its index once it
        is committed (or with the commit's LedgerError). Raises at once for a refused entry."""
        if self._closed:
            raise LedgerError(f"{self.path}: ledger is closed")
        record = canonical_record(entry)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((entry.get("job_id"), record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        # Let the appends of tasks that finish in this same loop iteration join the first commit.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending, []
            records = [(job_id, record) for job_id, record, _ in batch]
            try:
                indices = await self._thread.run(functools.partial(self._write, records))
            except Exception as exc:
                error = LedgerError(f"{self.path}: commit failed: {exc}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), index in zip(batch, indices, strict=True):
                if not future.done():
                    future.set_result(index)

    def _write(self, records: list[tuple[str | None, bytes]]) -> list[int]:
        with transaction(self._conn):
            return append_records(self._conn, records)

    def _entries(self) -> list[StoredEntry]:
        return list(read_entries(self._conn))

    async def entries(self) -> list[StoredEntry]:
        return await self._thread.run(self._entries)

    async def verify(self) -> VerifyReport:
        return await self._thread.run(lambda: verify(read_entries(self._conn)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        self._thread.shutdown()
        self._conn.close()
