"""What a peer sends reaches the user only as a reply in RFC 5321's grammar, and only escaped:
lines outside the grammar are a protocol error; invisible and controlling characters in a
real reply are shown escaped in text and carried as \\u escapes in JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.lab.dns import LoopThread
from probe.lab.smtp import port_of, start_raw
from tests.conftest import valid

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def probe_json(lt: LoopThread, greeting: bytes, after: dict[bytes, bytes] | None = None) -> dict:  # type: ignore[type-arg]
    async def script(r: Reader, w: Writer) -> None:
        w.write(greeting)
        while line := await r.readline():
            verb = line.split()[0].upper() if line.split() else b""
            w.write((after or {}).get(verb, b"250 ok\r\n"))
            if verb == b"QUIT":
                return

    srv = lt.run(start_raw(script))
    try:
        r = CliRunner().invoke(
            cli,
            [f"[127.0.0.1]:{port_of(srv)}", "--timeout", "2", "--format", "json"],
            env={"NO_COLOR": "1"},
        )
    finally:
        lt.loop.call_soon_threadsafe(srv.close)
    assert "Traceback" not in r.output
    return valid(json.loads(r.stdout))  # type: ignore[no-any-return]


@pytest.mark.parametrize("line", [b"2500 x", b"220x", b"+22 x", b" 220 x", b"2_2 x", b"-22 x"])
def test_a_greeting_outside_the_grammar_is_a_protocol_error(
    loop_thread: LoopThread, line: bytes
) -> None:
    doc = probe_json(loop_thread, line + b"\r\n")
    step = doc["sessions"][0]["steps"][0]
    assert step["reply"] is None
    assert step["error"]["kind"] == "protocol"
    assert doc["exit_status"] != 0


def test_a_reply_outside_the_grammar_later_in_the_session_is_a_protocol_error(
    loop_thread: LoopThread,
) -> None:
    doc = probe_json(loop_thread, b"220 ok\r\n", {b"EHLO": b"250x hello\r\n"})
    steps = doc["sessions"][0]["steps"]
    ehlo = next(s for s in steps if s["command"] == "EHLO")
    assert ehlo["reply"] is None and ehlo["error"]["kind"] == "protocol"


HOSTILE = "220 mx \u202eevil\u202c \u2028next \x85nel \x7fdel \U000e0041tag \u061cmark\r\n"


def test_server_text_is_escaped_in_text_and_json(loop_thread: LoopThread) -> None:
    async def script(r: Reader, w: Writer) -> None:
        w.write(HOSTILE.encode())
        while line := await r.readline():
            w.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")

    srv = loop_thread.run(start_raw(script))
    try:
        args = [f"[127.0.0.1]:{port_of(srv)}", "--timeout", "2"]
        text = CliRunner().invoke(cli, args, env={"NO_COLOR": "1"})
        js = CliRunner().invoke(cli, [*args, "--format", "json"], env={"NO_COLOR": "1"})
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
    unsafe = ["\u202e", "\u202c", "\u2028", "\x85", "\x7f", "\U000e0041", "\u061c"]
    for out in (text.stdout, js.stdout):
        assert not [c for c in unsafe if c in out], out
    assert "\\u202eevil" in text.stdout and "\\U000e0041tag" in text.stdout
    greeting = valid(json.loads(js.stdout))["sessions"][0]["steps"][0]["reply"]["lines"][0]
    assert greeting == HOSTILE.rstrip("\r\n")
