"""I/O: the event loop the network commands run on.

uvloop when it is installed (it is a dependency where it builds): its event loop and TLS
transport are compiled, and a batch spends most of its time in them. `SMTP_PROBE_LOOP=asyncio`
chooses the standard loop, for comparison or when in doubt.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Coroutine
from typing import TypeVar

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
