"""Group commit: what many rows submit at about the same time runs as one transaction.

Each migrated session ends in two writes (the created meeting remembered, then
the session moved with its event). Done one transaction per row, the round
trips to PostgreSQL -- and PostgreSQL's work per statement and per commit --
were most of the CPU a session cost. A `GroupCommit` runs one flush at a time;
while it runs, new submissions gather for the next one. Batches therefore grow
with load, and a lone submission never waits for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from services.core.db.errors import run_again_async
from services.core.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Run submitted items in batches through `flush`, which answers one result per item.

    `key` keeps two items with the same key out of one batch (the later waits
    for the next). A batch PostgreSQL aborts as a conflict runs again
    (`core.db.errors.run_again_async`); a batch
    that fails otherwise is run again item by item, so one row's error is that
    row's alone.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_batch: int = 64,
        key: Callable[[T], Hashable] | None = None,
        attempts: int = 3,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.name = name
        self.max_batch = max_batch
        self._key = key
        self._attempts = attempts
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Run `item` with whatever else is waiting; its own result (or error)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"group-commit:{self.name}")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._run(self._take())
        finally:
            self._task = None
            # Anything submitted while a failing flush unwound gets a new drainer.
            if self._pending:
                self._task = asyncio.create_task(self._drain(), name=f"group-commit:{self.name}")

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            if entry[1].done():  # its caller gave up (cancelled): nothing to run
                continue
            key = self._key(entry[0]) if self._key else None
            if len(batch) >= self.max_batch or (key is not None and key in keys):
                later.append(entry)
                continue
            if key is not None:
                keys.add(key)
            batch.append(entry)
        self._pending = later
        return batch

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if not batch:
            return
        items = [item for item, _ in batch]
        try:
            results = await run_again_async(
                lambda: self._flush(items), what=f"{self.name}: batch", attempts=self._attempts
            )
        except Exception as exc:
            if len(batch) > 1:
                log.warning("%s: batch of %d failed; running each alone", self.name, len(batch))
                for entry in batch:
                    await self._run([entry])
                return
            _settle(batch[0][1], error=exc)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
