"""I/O: connections kept open between targets, the way an MTA's connection cache keeps them.

A target that checks recipients takes an idle connection to the same MX (name, address and
options) when there is one: MAIL, RCPT and RSET on it, instead of a new connection,
greeting, EHLO and TLS handshake. Every session to an address comes through here, so the
connections open to it (busy, idle or closing) never outnumber the per-host limit.

The pool does not count connections: it asks each one its state (`State`), and a
connection that has closed is simply forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from probe.aio import cancel_all
from probe.config import BatchLimits, SessionOptions
from probe.context import RunContext
from probe.limits import Address, Limits, provider_of
from probe.messages import msg
from probe.result import Session
from probe.session import KeptConnection, open_session, release, reuse_session

FRESH_NOTE = msg("pool.fresh")
PoolKey = tuple[str, str, int, SessionOptions]


class State(Enum):
    BUSY = "busy"  # a session, or its close, is running on it
    IDLE = "idle"  # open, waiting for the next target
    EXPIRED = "expired"  # open, but due to close: worn out, idle too long, or dropped
    CLOSED = "closed"


@dataclass(eq=False)  # told apart by identity
class _Conn:
    key: PoolKey
    kept: KeptConnection | None = None  # None until its first session has kept it
    busy: bool = True
    idle_since: float = 0.0
    timer: asyncio.TimerHandle | None = None
    opened: float = field(default_factory=time.time)  # when its greeting, EHLO, TLS were had

    def state(self, limits: BatchLimits, now: float) -> State:
        if self.busy:
            return State.BUSY
        kept = self.kept
        if kept is None or kept.conn.closed:
            return State.CLOSED
        worn = kept.uses >= limits.reuse or kept.rejections >= limits.rejections
        if worn or not kept.alive or now - self.idle_since >= limits.idle:
            return State.EXPIRED
        return State.IDLE

    def rest(self) -> None:
        """The session on it is over: idle from now (or closed, if it was not kept)."""
        self.busy = False
        self.idle_since = time.monotonic()


class Pool:
    """A `SessionRunner` that keeps connections for targets that check recipients."""

    def __init__(self, limits: Limits, run: RunContext | None = None) -> None:
        self.limits = limits
        self.config = limits.config
        self.run = run or RunContext()
        self._conns: dict[Address, list[_Conn]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _state(self, conn: _Conn) -> State:
        return conn.state(self.config, time.monotonic())

    def _open(self, addr: Address) -> list[_Conn]:
        """The address's connections that are not closed; closed ones are forgotten here."""
        conns = [c for c in self._conns.get(addr, ()) if self._state(c) is not State.CLOSED]
        if conns:
            self._conns[addr] = conns
        else:
            self._conns.pop(addr, None)
        return conns

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        return (await self.serve(host, address, port, opts))[0]

    async def serve(
        self, host: str, address: str, port: int, opts: SessionOptions
    ) -> tuple[Session, float | None]:
        """A session, and how old its connection's facts are when it ran on a kept one."""
        addr = (address, port)
        key = (host, address, port, replace(opts, rcpts=()))
        provider = provider_of(host, address)
        async with self.limits.provider_slot(provider):
            return await self._serve(host, addr, key, provider, opts)

    async def _serve(
        self, host: str, addr: Address, key: PoolKey, provider: str, opts: SessionOptions
    ) -> tuple[Session, float | None]:
        await self.limits.acquire(addr)
        handed_on = False
        try:
            await self.limits.pace(provider)
            # One budget for the address, whatever kept connections cost before a new one.
            deadline = time.monotonic() + opts.timeouts.budget
            failed = False
            while opts.rcpts and (conn := self._take(addr, key)) is not None:
                session = await self._reuse(conn, _until(opts, deadline))
                if session is not None:
                    handed_on = self._settle(addr, conn)
                    return session, max(0.0, time.time() - conn.opened)
                failed = True
            await self._make_room(addr)
            # Time spent making room is not the new session's; a failed kept one's time is.
            conn = _Conn(key)
            self._conns.setdefault(addr, []).append(conn)
            session = await self._fresh(
                conn, host, addr, _until(opts, deadline) if failed else opts
            )
            handed_on = self._settle(addr, conn)
            return (_noted(session, FRESH_NOTE) if failed else session), None
        finally:
            if not handed_on:
                self.limits.release(addr)

    async def _reuse(self, conn: _Conn, opts: SessionOptions) -> Session | None:
        assert conn.kept is not None
        try:
            reused = await reuse_session(conn.kept, opts, self.run)
        finally:
            conn.rest()
        return reused.session if reused is not None else None

    async def _fresh(self, conn: _Conn, host: str, addr: Address, opts: SessionOptions) -> Session:
        try:
            session, kept = await open_session(host, *addr, opts, self.run, keep=bool(opts.rcpts))
        finally:
            conn.rest()
        conn.kept = kept
        return session

    def _take(self, addr: Address, key: PoolKey) -> _Conn | None:
        """The newest idle connection for `key`, now busy."""
        for conn in reversed(self._open(addr)):
            if conn.key == key and self._state(conn) is State.IDLE:
                conn.busy = True
                if conn.timer is not None:
                    conn.timer.cancel()
                return conn
        return None

    def _settle(self, addr: Address, conn: _Conn) -> bool:
        """After a session: keep the connection idle, or close it in the background holding
        the caller's slot (True: the slot went with it)."""
        state = self._state(conn)
        if state is State.IDLE:
            loop = asyncio.get_running_loop()
            since = conn.idle_since
            conn.timer = loop.call_later(self.config.idle, self._expire, addr, conn, since)
            return False
        if state is State.EXPIRED:
            self._spawn(self._release(conn), addr)  # the record is ready; the QUIT can wait
            return True
        return False

    async def _make_room(self, addr: Address) -> None:
        """Under a slot: at the limit, close a connection nobody uses before a new one opens."""
        while len(open_ := self._open(addr)) >= self.config.per_host:
            spare = next((c for c in open_ if self._state(c) is not State.BUSY), None)
            if spare is None:
                return
            if spare.timer is not None:
                spare.timer.cancel()
            # A server slow to answer QUIT must not hold up the target waiting for room.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._release(spare)

    def _expire(self, addr: Address, conn: _Conn, since: float) -> None:
        self._spawn(self._close_idle(addr, conn, since), None)

    async def _close_idle(self, addr: Address, conn: _Conn, since: float) -> None:
        # It stays open, and counted, until a slot is had; a target may take it meanwhile,
        # and then it is busy, or idle again since later, and not due. (Timers may fire a
        # little early: the parking it was set for is what counts, not the clock.)
        async with self.limits.slot(addr):
            if conn.idle_since == since and self._state(conn) in (State.IDLE, State.EXPIRED):
                await self._release(conn)

    async def _release(self, conn: _Conn) -> None:
        if conn.kept is None:
            return
        conn.busy = True
        try:
            await release(conn.kept, self.run)
        finally:
            conn.busy = False

    def _spawn(self, work: Coroutine[Any, Any, None], slot: Address | None) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                if slot is not None:
                    self.limits.release(slot)

        task = asyncio.get_running_loop().create_task(run())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, wait: float = 3.0) -> None:
        """QUIT every connection nobody uses; after `wait` seconds, cut those still closing."""
        for addr in list(self._conns):
            for conn in self._open(addr):
                if self._state(conn) is State.BUSY:
                    continue
                if conn.timer is not None:
                    conn.timer.cancel()
                self._spawn(self._release(conn), None)
        closing = list(self._closing)
        if not closing:
            return
        # A slow server must not hold up the end of a run (or a Ctrl-C) for a whole command
        # timeout; a release cut short aborts its connection.
        await asyncio.wait(closing, timeout=wait)
        await cancel_all(closing)  # those still closing


def _until(opts: SessionOptions, deadline: float) -> SessionOptions:
    budget = round(max(0.1, deadline - time.monotonic()), 1)
    return replace(opts, timeouts=replace(opts.timeouts, budget=budget))


def _noted(session: Session, note: str) -> Session:
    first, *rest = session.steps or (None,)
    if first is None:
        return session
    text = msg("join.two", first=first.note, second=note) if first.note else note
    return session._replace(steps=(first._replace(note=text), *rest))
