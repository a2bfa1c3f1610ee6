"""Hostile and broken SMTP servers (raw asyncio servers on 127.0.0.1), one case each.

For every case the probe must end within its timeouts, name the failure in plain words, exit
with a documented status, keep memory bounded and print no traceback or raw control character.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from probe.cli import cli
from probe.lab.dns import LoopThread
from probe.lab.smtp import port_of, start_raw
from tests.conftest import valid

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

CA = trustme.CA()
SERVER_CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
CA.issue_cert("raw.test").configure_cert(SERVER_CTX)


async def send(w: Writer, data: bytes) -> None:
    w.write(data)
    await w.drain()


async def serve_commands(r: Reader, w: Writer, replies: dict[bytes, bytes]) -> None:
    """Answer each command line by its verb; default 250."""
    while line := await r.readline():
        verb = line.split()[0].upper() if line.split() else b""
        await send(w, replies.get(verb, b"250 2.0.0 ok\r\n"))
        if verb == b"QUIT":
            return


async def garbage(r: Reader, w: Writer) -> None:
    await send(w, b"\x16\x03\x01 hello? \xff\xfe not smtp\r\n")
    await asyncio.sleep(3)


async def http(r: Reader, w: Writer) -> None:
    # An HTTP server waiting for a request gives up first (as many do, with a 408).
    await asyncio.sleep(0.2)
    await send(w, b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")


async def tls_only(r: Reader, w: Writer) -> None:
    await asyncio.sleep(5)  # a TLS server waits for a ClientHello that never comes


async def long_line(size: int) -> Callable[[Reader, Writer], Awaitable[None]]:
    async def script(r: Reader, w: Writer) -> None:
        await send(w, b"220 " + b"x" * size + b"\r\n")
        await asyncio.sleep(2)

    return script


async def endless_multiline(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    await r.readline()
    chunk = b"250-more and more\r\n" * 500  # the reply never ends; the chunks keep it quick
    for _ in range(2_000):
        w.write(chunk)
        await w.drain()


async def ten_thousand_lines(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    await r.readline()
    await send(w, b"".join(b"250-line %d\r\n" % i for i in range(9999)) + b"250 last\r\n")
    await serve_commands(r, w, {})


async def drip(r: Reader, w: Writer) -> None:
    for b in b"220 raw.test slow\r\n":
        await send(w, bytes([b]))
        await asyncio.sleep(1)


async def silent(r: Reader, w: Writer) -> None:
    await asyncio.sleep(5)


async def close_mid_reply(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    await r.readline()
    await send(w, b"250-raw.test\r\n250-PIPEL")
    w.close()


async def mid_421(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    await serve_commands(r, w, {b"MAIL": b"421 4.3.2 Shutting down, try later\r\n"})


async def codes_disagree(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    await serve_commands(r, w, {b"EHLO": b"250-raw.test\r\n251-odd\r\n252 last\r\n"})


async def bare_lf(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\n")
    while line := await r.readline():
        verb = line.split()[0].upper()
        await send(w, b"221 bye\n" if verb == b"QUIT" else b"250 ok\n")
        if verb == b"QUIT":
            return


async def nasty_bytes(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test \xff\xfe\x00 caf\xe9 \x1b[2J\x1b]0;pwned\x07 \x9b31m\r\n")
    await serve_commands(r, w, {b"RCPT": b"550 5.1.1 \x1b[31mno\x1b[0m such user\x00 \x08\x08\r\n"})


async def early_talker(r: Reader, w: Writer) -> None:
    await send(w, b"hello, I talk first\r\n220 raw.test\r\n")
    await serve_commands(r, w, {})


async def extra_after_greeting(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n250 I was not asked\r\n")
    await serve_commands(r, w, {b"EHLO": b"250 raw.test real answer\r\n"})


async def starttls_injection(r: Reader, w: Writer) -> None:
    await send(w, b"220 raw.test\r\n")
    while line := await r.readline():
        verb = line.split()[0].upper()
        if verb == b"EHLO":
            await send(w, b"250-raw.test\r\n250 STARTTLS\r\n")
        elif verb == b"STARTTLS":
            await send(w, b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
            await w.start_tls(SERVER_CTX)
            await serve_commands(
                r, w, {b"EHLO": b"250-raw.test\r\n250 SIZE 100\r\n", b"QUIT": b"221 bye\r\n"}
            )
            return


# name -> (script, extra args, expected exit statuses, words that must appear)
CASES: dict[str, tuple[Any, list[str], set[int], list[str]]] = {
    "garbage greeting": (garbage, [], {75}, ["not an SMTP reply"]),
    "http server": (http, [], {75}, ["not an SMTP reply"]),
    "tls-only port": (tls_only, [], {75}, ["no greeting"]),
    "10 KB line": ("long10k", [], {75}, ["reply too long"]),
    "1 MB line": ("long1m", [], {75}, ["reply too long"]),
    "endless multi-line": (endless_multiline, [], {75}, ["reply too long"]),
    "10,000 lines": (ten_thousand_lines, [], {75}, ["reply too long"]),
    "drip-feed": (drip, [], {75}, ["no greeting"]),
    "no greeting": (silent, [], {75}, ["no greeting"]),
    "close mid-reply": (close_mid_reply, [], {75}, ["closed the connection"]),
    "421 mid-session": (mid_421, [], {75}, ["421 4.3.2"]),
    "codes disagree": (codes_disagree, [], {0}, ["different codes"]),
    "bare LF": (bare_lf, [], {0}, ["250 ok"]),
    "non-UTF-8, NUL, ANSI": (
        nasty_bytes,
        ["--rcpt", "a@raw.test"],
        {69},
        ["\\xff\\xfe\\x00", "\\x1b[31mno"],
    ),
    "early talker": (early_talker, [], {75}, ["not an SMTP reply"]),
    "unasked reply after greeting": (
        extra_after_greeting,
        [],
        {0},
        ["nobody asked for", "real answer"],
    ),
    "STARTTLS injection": (starttls_injection, [], {0}, ["discarded (RFC 3207", "SIZE 100"]),
}


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


# The CLI runs on uvloop where installed (probe/aio.py); the standard loop must hold up as well.
LOOPS = ["uvloop", "asyncio"]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_server(loop_thread: LoopThread, case: str, loop: str) -> None:
    script, extra, statuses, words = CASES[case]
    if script == "long10k":
        script = loop_thread.run(long_line(10 * 1024))
    elif script == "long1m":
        script = loop_thread.run(long_line(1024 * 1024))
    srv = loop_thread.run(start_raw(script))
    try:
        tracemalloc.start()
        t0 = time.monotonic()
        r = CliRunner().invoke(
            cli,
            [
                f"[127.0.0.1]:{port_of(srv)}",
                "--timeout",
                "1.5",
                "--budget",
                "6",
                "--helo",
                "probe.test",
                *extra,
            ],
            env={"NO_COLOR": "1", "SMTP_PROBE_LOOP": loop},
        )
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
    out = r.output
    assert r.exit_code in statuses, (case, r.exit_code, out[-2000:])
    assert elapsed < 10, elapsed
    assert peak < 32 * 1024 * 1024, peak
    assert "Traceback" not in out
    assert not RAW_CONTROL.search(out), repr(RAW_CONTROL.search(out))
    for w in words:
        assert w in out, (case, w, out[-3000:])


@pytest.mark.parametrize("loop", LOOPS)
def test_injected_plaintext_is_counted_in_json(loop_thread: LoopThread, loop: str) -> None:
    srv = loop_thread.run(start_raw(starttls_injection))
    try:
        r = CliRunner(env={"SMTP_PROBE_LOOP": loop}).invoke(
            cli,
            [
                f"[127.0.0.1]:{port_of(srv)}",
                "--timeout",
                "2",
                "--format",
                "json",
                "--quit-after",
                "ehlo",
            ],
        )
        r2 = CliRunner(env={"SMTP_PROBE_LOOP": loop}).invoke(
            cli, [f"[127.0.0.1]:{port_of(srv)}", "--timeout", "2", "--format", "json"]
        )
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
    assert valid(json.loads(r.stdout))["sessions"][0]["tls"]["attempted"] is False
    doc = valid(json.loads(r2.stdout))
    tls = doc["sessions"][0]["tls"]
    assert tls["ok"] and tls["injected_plaintext_bytes"] == len(
        b"250-injected\r\n250 AUTH PLAIN\r\n"
    )
    ehlo2 = [s for s in doc["sessions"][0]["steps"] if s["command"] == "EHLO"][-1]
    assert ehlo2["tls"] is True
    assert ehlo2["reply"]["lines"] == ["250-raw.test", "250 SIZE 100"]
