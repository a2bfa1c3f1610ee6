"""I/O: what the sessions of one run share, handed to each: the TLS state, the replies already
interpreted, and the observer told of progress. Two runs share nothing unless handed the same
`RunContext`."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from probe.cache import Bounded
from probe.interpret import interpret_reply
from probe.reply import reply_from_lines
from probe.result import DnsResult, Session, Step, TlsInfo, WireReply
from probe.tls import TlsState
from probe.wire import KNOWN_LONGEST, Known, Raw


class Observer(Protocol):
    """Told of a probe's progress as it happens (the live transcript on a terminal)."""

    def resolved(self, dns: DnsResult) -> None: ...
    def session_started(self, host: str, address: str, port: int) -> None: ...
    def tls(self, info: TlsInfo) -> None: ...
    def step(self, step: Step) -> None: ...
    def session_ended(self, session: Session) -> None: ...


class Replies:
    """Replies parsed and interpreted once per run: a batch sees the same greetings, EHLO
    lists and 250s thousands of times, and interpreting is pure."""

    LONG = KNOWN_LONGEST  # a long reply is rarely seen twice: keeping it would cost memory

    def __init__(self, size: int = 4096) -> None:
        self.known: Known = Bounded(size)  # parsed, by their bytes (read by the wire)
        self._seen: Bounded[tuple[bytes, str], WireReply] = Bounded(size)
        self._extensions: Bounded[tuple[str, ...], tuple[tuple[str, str], ...]] = Bounded(256)

    def extensions(self, lines: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """The EHLO keywords of a reply (each MX answers every session with the same list)."""
        found = self._extensions.get(lines)
        if found is None:
            found = parse_extensions(lines)
            self._extensions.put(lines, found)
        return found

    def get(self, raw: Raw, command: str) -> WireReply:
        if len(raw.data) > self.LONG:
            return wire_reply(raw, command)
        key = (raw.data, command)  # the code and the message are read from the bytes
        reply = self._seen.get(key)
        if reply is None:
            reply = wire_reply(raw, command)
            self._seen.put(key, reply)
        return reply


def parse_extensions(lines: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """EHLO keywords and their parameters (the first line is the server's name)."""
    out: list[tuple[str, str]] = []
    for line in lines[1:]:
        body = line[4:].strip()
        if not body:
            continue
        keyword, _, params = body.partition(" ")
        out.append((keyword.upper(), params.strip()))
    return tuple(out)


def wire_reply(raw: Raw, command: str) -> WireReply:
    """A reply as received, with what it means."""
    text = raw.data.decode("utf-8", "backslashreplace")
    lines = tuple(line.rstrip("\r") for line in text.split("\n") if line != "")
    lines = lines or (f"{raw.code} {raw.message}",)
    reply = reply_from_lines(lines, command)
    if reply is None:
        return WireReply(raw.code, None, lines, None)
    enhanced = str(reply.enhanced) if reply.enhanced else None
    return WireReply(raw.code, enhanced, lines, interpret_reply(reply, "\n".join(lines)))


@dataclass(eq=False)
class RunContext:
    """What the sessions of one run share; two runs share nothing unless handed one of these."""

    tls: TlsState = field(default_factory=TlsState)
    replies: Replies = field(default_factory=Replies)
    observer: Observer | None = None
    _fqdn: str | None = None
    _stamp: tuple[int, str] = (0, "")

    def now(self) -> str:
        """The time of day in UTC to the second, ISO 8601 (a probe's `started_at`): made
        once a second, not once a target (a batch starts hundreds a second)."""
        second = int(time.time())
        if second != self._stamp[0]:
            when = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            self._stamp = (second, when)
        return self._stamp[1]

    def fqdn(self) -> str:
        # getfqdn() may ask the resolver: once per run is enough.
        if self._fqdn is None:
            self._fqdn = socket.getfqdn()
        return self._fqdn
