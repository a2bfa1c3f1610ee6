"""Kept connections in `batch`: several targets on one connection, within the per-host limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from probe.batch import SessionCache
from probe.config import BatchLimits, SessionOptions, Timeouts
from probe.lab.smtp import port_of, start_raw
from probe.limits import Limits
from probe.pool import FRESH_NOTE, Pool
from probe.result import Session
from probe.session import REUSED_NOTE

OPTS = SessionOptions(helo="pool.test", timeouts=Timeouts(2.0, budget=10.0))


def pool_of(per_host: int, reuse: int, idle: float = 2.0) -> Pool:
    return Pool(Limits(BatchLimits(per_host=per_host, reuse=reuse, idle=idle)))


@dataclass
class Mx:
    """A raw SMTP server that logs each connection's commands and can misbehave on cue."""

    refuse_after: int | None = None  # MAIL number (per connection) answered 421, then closed
    close_after_rset: bool = False
    ignore_quit: bool = False
    stall_rcpt_after: int | None = None  # RCPTs answered in all; later ones get no reply
    refuse_rset_after: int | None = None  # RSET number (per connection) answered 421, closed
    connections: list[list[str]] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    rcpts: int = 0

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen: list[str] = []
        self.connections.append(seen)
        self.active += 1
        self.peak = max(self.peak, self.active)
        mails = 0
        try:
            w.write(b"220 mx.test ESMTP\r\n")
            while line := await r.readline():
                cmd = line.decode().strip()
                seen.append(cmd)
                verb = cmd.split(" ")[0].upper()
                if verb == "EHLO":
                    w.write(b"250-mx.test\r\n250 PIPELINING\r\n")
                elif verb == "MAIL":
                    mails += 1
                    if self.refuse_after is not None and mails > self.refuse_after:
                        w.write(b"421 4.7.0 mx.test too many transactions, closing\r\n")
                        await w.drain()
                        return
                    w.write(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    self.rcpts += 1
                    if self.stall_rcpt_after is not None and self.rcpts > self.stall_rcpt_after:
                        continue
                    bad = "nobody" in cmd
                    w.write(b"550 5.1.1 No such user\r\n" if bad else b"250 2.1.5 Ok\r\n")
                elif verb == "RSET":
                    rsets = sum(c == "RSET" for c in seen)
                    if self.refuse_rset_after is not None and rsets > self.refuse_rset_after:
                        w.write(b"421 4.7.0 mx.test closing\r\n")
                        await w.drain()
                        return
                    w.write(b"250 2.0.0 Ok\r\n")
                    if self.close_after_rset:
                        await w.drain()
                        return
                elif verb == "QUIT" and self.ignore_quit:
                    continue
                elif verb == "QUIT":
                    w.write(b"221 2.0.0 Bye\r\n")
                    await w.drain()
                    return
                else:
                    w.write(b"502 5.5.2 Error: command not recognized\r\n")
                await w.drain()
        finally:
            self.active -= 1
            w.close()


async def serve(mx: Mx) -> tuple[asyncio.Server, int]:
    srv = await start_raw(mx)
    return srv, port_of(srv)


async def all_closed(mx: Mx) -> None:
    """Give the server a moment to see closes that are under way."""
    for _ in range(50):
        if mx.active == 0:
            return
        await asyncio.sleep(0.05)


def _opts(rcpt: str) -> SessionOptions:
    return replace(OPTS, rcpts=(rcpt,))


def commands(s: Session) -> list[str]:
    return [st.command for st in s.steps]


def rcpt_code(s: Session) -> int | None:
    st = next(st for st in s.steps if st.command == "RCPT")
    return st.reply.code if st.reply else None


async def test_targets_share_a_kept_connection_up_to_the_reuse_limit() -> None:
    mx = Mx()
    srv, port = await serve(mx)
    pool = pool_of(1, 3)
    try:
        rcpts = [f"{'nobody' if i == 4 else 'user'}{i}@mx.test" for i in range(7)]
        sessions = [await pool.session("mx.test", "127.0.0.1", port, _opts(r)) for r in rcpts]
        await pool.close()
    finally:
        srv.close()
    assert [s.reused for s in sessions] == [False, True, True, False, True, True, False]
    for s in sessions:
        assert s.completed and commands(s) == ["CONNECT", "EHLO", "MAIL", "RCPT", "RSET"]
        assert (s.steps[0].note == REUSED_NOTE) is s.reused
    # Each record carries its own recipient's answer.
    assert [rcpt_code(s) for s in sessions] == [250, 250, 250, 250, 550, 250, 250]
    assert len(mx.connections) == 3
    assert mx.connections[0] == [
        "EHLO pool.test",
        *(["MAIL FROM:<>", f"RCPT TO:<{rcpts[i]}>", "RSET"][j] for i in range(3) for j in range(3)),
        "QUIT",
    ]
    assert all(c[-1] == "QUIT" for c in mx.connections)  # every one ended politely
    assert mx.active == 0


async def test_a_connection_that_refuses_more_gives_way_to_a_fresh_one() -> None:
    mx = Mx(refuse_after=1)
    srv, port = await serve(mx)
    pool = pool_of(1, 10)
    try:
        sessions = [
            await pool.session("mx.test", "127.0.0.1", port, _opts(f"user{i}@mx.test"))
            for i in range(3)
        ]
        await pool.close()
    finally:
        srv.close()
    # The 421 met on a kept connection is not the target's answer: it gets a new connection,
    # and its record shows only what that one said.
    assert [s.reused for s in sessions] == [False, False, False]
    # Each connection served one target and refused the next one's MAIL.
    assert len(mx.connections) == 3
    assert [c[-1] for c in mx.connections] == ["MAIL FROM:<>", "MAIL FROM:<>", "QUIT"]
    for s in sessions:
        assert s.completed and [st.reply.code for st in s.steps if st.reply] == [
            220,
            250,
            250,
            250,
            250,
        ]


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    mx = Mx(close_after_rset=True)
    srv, port = await serve(mx)
    pool = pool_of(1, 10)
    try:
        sessions = []
        for i in range(3):
            sessions.append(
                await pool.session("mx.test", "127.0.0.1", port, _opts(f"user{i}@mx.test"))
            )
            await asyncio.sleep(0.05)  # the close arrives before the next target
        await pool.close()
    finally:
        srv.close()
    assert [s.reused for s in sessions] == [False, False, False]
    assert len(mx.connections) == 3
    assert all(s.completed and rcpt_code(s) == 250 for s in sessions)


async def test_kept_connections_stay_within_the_per_host_limit() -> None:
    mx = Mx()
    srv, port = await serve(mx)
    pool = pool_of(2, 5)
    try:
        sessions = await asyncio.gather(
            *(
                pool.session("mx.test", "127.0.0.1", port, _opts(f"user{i}@mx.test"))
                for i in range(20)
            )
        )
        await pool.close()
    finally:
        srv.close()
    assert all(s.completed for s in sessions)
    assert mx.peak == 2  # the limit held, and was used
    assert len(mx.connections) == 4  # 20 targets, 5 a connection
    assert sum(s.reused for s in sessions) == 16
    assert mx.active == 0


async def test_an_idle_connection_is_closed_with_quit() -> None:
    mx = Mx()
    srv, port = await serve(mx)
    pool = pool_of(1, 10, idle=0.2)
    try:
        await pool.session("mx.test", "127.0.0.1", port, _opts("user@mx.test"))
        assert mx.active == 1
        await all_closed(mx)
        assert mx.active == 0 and mx.connections[0][-1] == "QUIT"
        await pool.close()
    finally:
        srv.close()


async def test_a_server_that_ignores_quit_cannot_hold_up_the_end() -> None:
    mx = Mx(ignore_quit=True)
    srv, port = await serve(mx)
    pool = pool_of(1, 10)
    try:
        await pool.session("mx.test", "127.0.0.1", port, _opts("user@mx.test"))
        await pool.close(wait=0.3)  # the command timeout is 2 s; the close gives up sooner
        await all_closed(mx)
    finally:
        srv.close()
    assert mx.connections[0][-1] == "QUIT" and mx.active == 0


async def test_many_mx_names_on_one_address_stay_within_the_per_host_limit() -> None:
    # Hosted mail: every customer's MX has its own name, and the names share a few addresses.
    # Idle connections kept for one name must not push the address past the limit.
    mx = Mx()
    srv, port = await serve(mx)
    pool = pool_of(2, 10)
    cache = SessionCache(pool)
    try:
        names = [f"tenant{i}.mx.test" for i in range(6)]
        for name in names:  # one at a time: each leaves an idle connection behind
            await pool.session(name, "127.0.0.1", port, _opts(f"user@{name}"))
        assert mx.peak == 2 and mx.active <= 2
        sessions = await asyncio.gather(
            *(
                pool.session(n, "127.0.0.1", port, _opts(f"u{i}@{n}"))
                for i in range(3)
                for n in names
            ),
            # Sessions checking no recipient come through the pool too.
            cache.session("other.mx.test", "127.0.0.1", port, OPTS),
        )
        await pool.close()
    finally:
        srv.close()
    assert all(s.completed for s in sessions)
    assert mx.peak == 2 and mx.active == 0


async def test_one_budget_covers_a_failed_kept_connection_and_the_new_one() -> None:
    mx = Mx(stall_rcpt_after=1)  # after the first answer, RCPT gets no reply at all
    srv, port = await serve(mx)
    pool = pool_of(1, 10)
    opts = replace(OPTS, timeouts=Timeouts(2.0, command=5.0, budget=1.0))
    try:
        first = await pool.session(
            "mx.test", "127.0.0.1", port, replace(opts, rcpts=("a@mx.test",))
        )
        t0 = asyncio.get_running_loop().time()
        second = await pool.session(
            "mx.test", "127.0.0.1", port, replace(opts, rcpts=("b@mx.test",))
        )
        elapsed = asyncio.get_running_loop().time() - t0
        await pool.close()
    finally:
        srv.close()
    assert first.completed
    # The kept connection stalled for the whole budget; the new one got what was left, not
    # another second: the budget is per address, as documented.
    assert second.outcome == "budget" and not second.reused
    assert FRESH_NOTE in (second.steps[0].note or "")
    last = second.steps[-1]
    assert last.error is not None and last.error.detail == "session took longer than 0.1 s"
    assert elapsed < 1.9, elapsed  # two budgets would take at least 2 s
    await all_closed(mx)
    assert mx.active == 0  # neither connection outlived its budget


async def test_a_cancelled_target_leaves_no_connection_open() -> None:
    mx = Mx(stall_rcpt_after=0)
    srv, port = await serve(mx)
    pool = pool_of(1, 10)
    try:
        task = asyncio.ensure_future(pool.session("mx.test", "127.0.0.1", port, _opts("a@mx.test")))
        for _ in range(100):
            if mx.rcpts:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await all_closed(mx)
    finally:
        srv.close()
    assert mx.rcpts == 1 and mx.active == 0


async def test_a_kept_connection_that_ends_at_rset_frees_its_place() -> None:
    # The second transaction on each connection stands, but its RSET closes the connection.
    # Nothing is open afterwards, so two new idle connections fit under a limit of two
    # without closing either.
    mx = Mx(refuse_rset_after=1)
    srv, port = await serve(mx)
    pool = pool_of(2, 10)
    try:
        done = [
            await pool.session(name, "127.0.0.1", port, _opts(f"u@{name}.test"))
            for name in ("a", "a", "b", "b", "c", "d")
        ]
        assert [s.reused for s in done] == [False, True, False, True, False, False]
        assert all(s.completed and rcpt_code(s) == 250 for s in done)
        assert len(mx.connections) == 4 and mx.active == 2
        assert "QUIT" not in mx.connections[2]  # c's connection was not closed to make room
        await pool.close()
    finally:
        srv.close()
    assert mx.active == 0
