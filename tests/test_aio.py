"""The event loop the network commands run on."""

from __future__ import annotations

import asyncio

import pytest

from probe import aio


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("SMTP_PROBE_LOOP", raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(_loop_module()).startswith("uvloop")
    monkeypatch.setenv("SMTP_PROBE_LOOP", " AsyncIO ")
    assert aio.loop_name() == "asyncio"
    assert aio.run(_loop_module()).startswith("asyncio")


def test_run_returns_the_result_and_raises_what_the_coroutine_raises() -> None:
    async def boom() -> None:
        raise LookupError("x")

    async def value() -> int:
        return 42

    assert aio.run(value()) == 42
    with pytest.raises(LookupError):
        aio.run(boom())
