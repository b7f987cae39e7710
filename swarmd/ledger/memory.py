"""The in-memory ledger: the same chain as the durable one, kept in a list (for the in-process
dispatcher and tests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from swarmd.ledger.chain import GENESIS_HASH, StoredEntry, VerifyReport, canonical_record, chain_hash, verify


class SharedLedger:
    """The in-memory ledger: the same chain as `DurableLedger`, in a list; safe across tasks and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Each entry's fields, in index order: its `StoredEntry` is built when read, not per
        #: append (a frozen dataclass costs a setattr call per field; a tuple, one allocation).
        self._rows: list[tuple[int, str | None, str, str, bytes]] = []
        #: The hash of the last entry (the genesis hash while empty).
        self._head: str = GENESIS_HASH
        self._jobs: dict[str, int] = {}

    async def append(self, entry: Mapping[str, Any]) -> int:
        return self._append(entry)

    def _append(self, entry: Mapping[str, Any]) -> int:
        record = canonical_record(entry)
        job_id = entry.get("job_id")
        with self._lock:
            if job_id is not None and job_id in self._jobs:
                return self._jobs[job_id]
            index = len(self._rows)
            prev = self._head
            self._head = digest = chain_hash(index, prev, record)
            self._rows.append((index, job_id, prev, digest, record))
            if job_id is not None:
                self._jobs[job_id] = index
            return index

    def append_soon(self, entry: Mapping[str, Any]) -> asyncio.Future[int]:
        """`append` as the dispatcher uses it: appended at once, its index in a done future."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(self._append(entry))
        return future

    def entries(self) -> list[StoredEntry]:
        with self._lock:
            rows = list(self._rows)
        return [StoredEntry(*row) for row in rows]

    def __len__(self) -> int:
        return len(self._rows)

    async def verify(self) -> VerifyReport:
        return verify(self.entries())

    async def close(self) -> None:
        return None
