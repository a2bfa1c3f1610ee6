"""I/O: the event loop the network commands run on.

uvloop when it is installed (it is a dependency where it builds): its event loop and TLS
transport are compiled, and a batch spends most of its time in them. `SMTP_PROBE_LOOP=asyncio`
chooses the standard loop, for comparison or when in doubt.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

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


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a new event loop, as `asyncio.run` does."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
