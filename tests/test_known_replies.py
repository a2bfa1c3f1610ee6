"""Replies remembered by their bytes (`probe.wire.Known`): taken again only when the very
same bytes arrive alone as a whole reply that was asked for; anything split, joined, trailing,
unasked or long is parsed (or kept as unsolicited) as before."""

from __future__ import annotations

import asyncio

import pytest

from probe.cache import Bounded
from probe.wire import KNOWN_LONGEST, Connection, Known, Raw

# Between two writes of a server: long enough for each to reach the client as a data event
# of its own on a loaded machine.
PAUSE = 0.1


class Pieces:
    """A server that sends `chunks` as its greeting, each written on its own after a pause
    (so that each reaches the client as a piece of its own), then waits for the client."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.done = asyncio.Event()

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            for chunk in self.chunks:
                w.write(chunk)
                await w.drain()
                await asyncio.sleep(PAUSE)
            await r.read()
        finally:
            w.close()
            self.done.set()


async def greeting(server: Pieces, known: Known) -> tuple[Raw, int]:
    """The greeting `server` sends, read with `known`; and the unsolicited bytes counted."""
    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        conn, got = await Connection.open(
            "127.0.0.1",
            port,
            tls=None,
            server_hostname=None,
            connect_timeout=5,
            greeting_timeout=5,
            known=known,
        )
        assert conn is not None and isinstance(got, Raw), got
        await asyncio.sleep((len(server.chunks) + 1) * PAUSE)  # the server has sent it all
        unsolicited = conn.unsolicited_total
        await conn.close()
        async with asyncio.timeout(5):
            await server.done.wait()
        return got, unsolicited
    finally:
        srv.close()
        await srv.wait_closed()


async def test_the_same_bytes_again_are_the_same_reply() -> None:
    known: Known = Bounded(8)
    first, _ = await greeting(Pieces(b"220 mx.test ESMTP\r\n"), known)
    again, _ = await greeting(Pieces(b"220 mx.test ESMTP\r\n"), known)
    assert first == Raw(220, "mx.test ESMTP", b"220 mx.test ESMTP\r\n")
    assert again is first
    assert len(known) == 1


async def test_a_reply_in_pieces_is_read_whole_and_not_remembered() -> None:
    known: Known = Bounded(8)
    got, _ = await greeting(Pieces(b"220 mx.te", b"st ESMTP\r\n"), known)
    assert got == Raw(220, "mx.test ESMTP", b"220 mx.test ESMTP\r\n")
    assert len(known) == 0


async def test_a_reply_with_bytes_after_it_is_not_remembered() -> None:
    known: Known = Bounded(8)
    got, unsolicited = await greeting(Pieces(b"220 hi\r\n250 extra\r\n"), known)
    assert got == Raw(220, "hi", b"220 hi\r\n")
    assert unsolicited == len(b"250 extra\r\n")
    assert len(known) == 0


async def test_a_long_reply_is_not_remembered() -> None:
    known: Known = Bounded(8)
    long = b"220 " + b"x" * KNOWN_LONGEST + b"\r\n"
    got, _ = await greeting(Pieces(long), known)
    assert got.code == 220 and got.data == long
    assert len(known) == 0


async def test_known_bytes_nobody_asked_for_are_unsolicited() -> None:
    known: Known = Bounded(8)
    await greeting(Pieces(b"220 ok\r\n"), known)
    # The same bytes again, after the greeting was read: nothing is awaited.
    got, unsolicited = await greeting(Pieces(b"220 ok\r\n", b"220 ok\r\n"), known)
    assert got == Raw(220, "ok", b"220 ok\r\n")
    assert unsolicited == len(b"220 ok\r\n")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # A whole first line buffered: the known bytes end the reply.
        (b"220-first\r\n", b"", Raw(220, "first\nok", b"220-first\r\n220 ok\r\n")),
        # Half a line buffered: the known bytes continue it, and the reply ends later.
        (
            b"220-first",
            b"220 last\r\n",
            Raw(220, "first220 ok\nlast", b"220-first220 ok\r\n220 last\r\n"),
        ),
    ],
)
async def test_known_bytes_after_buffered_ones_are_not_taken_alone(
    before: bytes, after: bytes, expected: Raw
) -> None:
    known: Known = Bounded(8)
    alone, _ = await greeting(Pieces(b"220 ok\r\n"), known)
    assert len(known) == 1
    chunks = (before, b"220 ok\r\n", after) if after else (before, b"220 ok\r\n")
    got, _ = await greeting(Pieces(*chunks), known)
    assert got == expected
    assert got is not alone
