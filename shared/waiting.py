"""`?wait=S`: an HTTP request that waits for what it asked for to settle (a redemption, a payment, a ledger
command), without holding a connection of the pool and without polling.

The consumer that settles it (the one that owns the member's partition, maybe in another process) sends
`NOTIFY <schema>_settled, '<id>'` in the batch's transaction (`announce`), so the notice goes out when the change is
committed. Any service's HTTP side waits with `runtime.waiting.until(id, read, settled, wait_s)`.
Each process listens on one connection of its own, opened when a request first waits and closed a few seconds after
the last one is answered. A request registers before it reads the state (or before it commits the change it will
wait on), so a notice cannot slip between its read and its wait; and it reads again after every notice and at its
deadline, so a lost notice costs a wait, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg

from shared import db
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
T = TypeVar("T")
LISTEN_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
LINGER_S = 5.0


def channel(schema: str) -> str:
    return f"{schema}_settled"


async def announce(uow: UnitOfWork, ids: list[str]) -> None:
    """Wake whoever waits for these ids (redemptions, payments, command keys), when the unit of work commits."""
    if ids:
        await uow.db.execute("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id", channel(uow.schema), ids)


class Waiting:
    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.channel = channel(schema)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._closing: asyncio.TimerHandle | None = None
        self._closer: asyncio.Future[None] | None = None

    async def until(self, key: str, read: Callable[[], Awaitable[T]], settled: Callable[[T], bool],
                    wait_s: float) -> T:
        """`read()` until `settled` says so or `wait_s` seconds have passed; the last read is the answer."""
        if wait_s <= 0:
            return await read()
        async with self.watching(key) as watch:
            return await watch.until(read, settled, wait_s)

    @contextlib.asynccontextmanager
    async def watching(self, key: str) -> AsyncIterator[Watch]:
        """Listen for `key` from now on: a request that registers before it commits its own change need not read
        the state back before it waits."""
        woken = asyncio.Event()
        self._waiters.setdefault(key, set()).add(woken)
        self._users += 1
        try:
            try:
                await self._listen()
            except LISTEN_ERRORS as exc:  # no listener: the request still answers, at its deadline
                log.warning("cannot listen for settled requests", extra={"error": repr(exc)})
            yield Watch(woken)
        finally:
            self._users -= 1
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[key]
            if self._users == 0:
                self._close_later()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for woken in self._waiters.get(payload, ()):
            woken.set()

    async def _listen(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await db.connect(self.dsn, timeout_s=5)
            try:
                await conn.add_listener(self.channel, self._notified)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    def _close_later(self) -> None:
        """Close the listener once nobody has waited for a while: under steady traffic it stays open, and a
        process (or a test's app) left idle does not keep a connection for nothing."""
        if self._closing is not None:
            self._closing.cancel()
        self._closing = asyncio.get_running_loop().call_later(LINGER_S, self._start_closing)

    def _start_closing(self) -> None:
        self._closer = asyncio.ensure_future(self._close())  # kept: a task nobody holds may be collected midway

    async def _close(self) -> None:
        async with self._lock:
            if self._users or self._conn is None:
                return
            conn, self._conn = self._conn, None
            with contextlib.suppress(*LISTEN_ERRORS):
                await conn.close(timeout=2)


class Unread:
    """No state known yet: read it first."""


UNREAD = Unread()


class Watch:
    def __init__(self, woken: asyncio.Event) -> None:
        self.woken = woken

    async def until(self, read: Callable[[], Awaitable[T]], settled: Callable[[T], bool], wait_s: float,
                    known: T | Unread = UNREAD) -> T:
        """Wait until `settled(read())` or `wait_s` seconds have passed. `known` is the state as this request left
        it, when it registered before committing it: then nothing needs reading until a notice or the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        found = await read() if isinstance(known, Unread) else known
        while not settled(found) and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), left)
            self.woken.clear()
            found = await read()
        return found
