"""Replies remembered by their bytes (`probe.wire.Known`): taken again only when the very
same bytes arrive alone as a whole reply; anything split, joined or trailing is parsed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from probe.cache import Bounded
from probe.wire import Connection, Known, Raw

Server = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pieces(*chunks: bytes) -> Server:
    """A server that sends `chunks` as its greeting, each written on its own after a pause
    (so that each reaches the client as a piece of its own), then waits for the client."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            w.write(chunk)
            await w.drain()
            await asyncio.sleep(0.05)
        await r.read()
        w.close()

    return serve


async def greeting(server: Server, known: Known) -> tuple[Raw, int]:
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
        await asyncio.sleep(0.2)  # whatever else the server wrote has arrived
        unsolicited = conn.unsolicited_total
        await conn.close()
        return got, unsolicited
    finally:
        srv.close()
        await srv.wait_closed()


def test_the_same_bytes_again_are_the_same_reply() -> None:
    async def main() -> None:
        known: Known = Bounded(8)
        first, _ = await greeting(pieces(b"220 mx.test ESMTP\r\n"), known)
        again, _ = await greeting(pieces(b"220 mx.test ESMTP\r\n"), known)
        assert first == Raw(220, "mx.test ESMTP", b"220 mx.test ESMTP\r\n")
        assert again is first
        assert len(known) == 1

    asyncio.run(main())


def test_a_reply_in_pieces_is_read_whole_and_not_remembered() -> None:
    async def main() -> None:
        known: Known = Bounded(8)
        got, _ = await greeting(pieces(b"220 mx.te", b"st ESMTP\r\n"), known)
        assert got == Raw(220, "mx.test ESMTP", b"220 mx.test ESMTP\r\n")
        assert len(known) == 0

    asyncio.run(main())


def test_a_reply_with_bytes_after_it_is_not_remembered() -> None:
    async def main() -> None:
        known: Known = Bounded(8)
        got, unsolicited = await greeting(pieces(b"220 hi\r\n250 extra\r\n"), known)
        assert got == Raw(220, "hi", b"220 hi\r\n")
        assert unsolicited == len(b"250 extra\r\n")
        assert len(known) == 0

    asyncio.run(main())


def test_known_bytes_that_end_a_longer_reply_are_not_taken_alone() -> None:
    async def main() -> None:
        known: Known = Bounded(8)
        alone, _ = await greeting(pieces(b"220 ok\r\n"), known)
        assert len(known) == 1
        # The same bytes, now the last line of a reply whose first line came before them.
        got, _ = await greeting(pieces(b"220-first\r\n", b"220 ok\r\n"), known)
        assert got == Raw(220, "first\nok", b"220-first\r\n220 ok\r\n")
        assert got is not alone

    asyncio.run(main())
