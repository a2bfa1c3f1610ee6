"""I/O: the event loop the network commands run on.

uvloop when it is installed (it is a dependency where it builds): its event loop and TLS
transport are compiled, and a batch spends most of its time in them. `SMTP_PROBE_LOOP=asyncio`
chooses the standard loop, for comparison or when in doubt.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Collection, Coroutine, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """The loop `run` will use: "uvloop" or "asyncio"."""
    if os.environ.get("SMTP_PROBE_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[object, None, T]) -> T:
    """Run a coroutine to completion on a new event loop, as `asyncio.run` does."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


async def cancel_all(tasks: Collection[asyncio.Task[object]], again: float = 0.5) -> None:
    """Cancel the tasks and wait until every one has ended.

    A task can swallow a cancel: on Python 3.11, asyncio.wait_for (which libraries await each
    reply with) returns the reply instead when both arrive together. Such a task carries on,
    perhaps to wait for work that will never come, so it is cancelled again every `again`
    seconds until it ends.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=again)
    for t in tasks:  # retrieved, so that none is logged as "never retrieved"
        if not t.cancelled():
            t.exception()


class Handoff(Generic[T]):
    """Items from a reader thread to the event loop, in order, at most `room` waiting.

    A deque between the two: the thread wakes the loop only when the loop waits on an empty
    one, and sleeps only when `room` items wait (until half have gone): a hand-over per
    item (a semaphore and a wake-up each) was a visible part of a batch's CPU per target.
    `None` ends the stream; an exception from the reader is handed over and raised.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, room: int) -> None:
        self._loop = loop
        self._room = max(room, 2)
        self._items: deque[T | BaseException | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._asleep = False  # the loop waits on an empty deque and needs a wake-up
        self._space = threading.Event()
        self._space.set()
        self._closed = threading.Event()

    def fill(self, items: Iterator[T]) -> None:
        """The reader thread's side: every item, then the end (or the error)."""
        try:
            for item in items:
                if not self._put(item):
                    return
        except Exception as e:  # reading failed: the stream ends with this error
            self._put(e)
            return
        self._put(None)

    def _put(self, item: T | BaseException | None) -> bool:
        if self._closed.is_set():
            return False
        self._items.append(item)
        if self._asleep:
            self._asleep = False
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is gone
                return False
        if len(self._items) >= self._room:
            self._space.clear()
            if len(self._items) >= self._room:  # not drained between the two looks
                self._space.wait()
        return not self._closed.is_set()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T | None:
        """The next item, None at the end; raises what the reader met."""
        while not self._items:
            self._waiter = self._loop.create_future()
            self._asleep = True
            if self._items:  # came in before the thread could see we sleep
                self._asleep = False
                break
            await self._waiter
        item = self._items.popleft()
        if not self._space.is_set() and len(self._items) <= self._room // 2:
            self._space.set()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the reader: it drops what it reads next and ends."""
        self._closed.set()
        self._space.set()
