"""Loopback mail servers for the report tests: one domain per scenario, and a small DOM of
the HTML reports (html.parser) to check their structure."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import trustme
from click.testing import CliRunner

from probe.cli import cli
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp

ZONE = """
ok.test. 60 IN MX 10 mx.ok.test.
ok.test. 60 IN MX 20 mx2.ok.test.
mx.ok.test. 60 IN A 127.0.1.2
mx2.ok.test. 60 IN A 127.0.1.2
grey.test. 60 IN MX 10 mx.grey.test.
mx.grey.test. 60 IN A 127.0.1.3
busy.test. 60 IN MX 10 mx.busy.test.
mx.busy.test. 60 IN A 127.0.1.4
plain.test. 60 IN MX 10 mx.plain.test.
mx.plain.test. 60 IN A 127.0.1.5
untrusted.test. 60 IN MX 10 mx.untrusted.test.
mx.untrusted.test. 60 IN A 127.0.1.6
slow.test. 60 IN MX 10 mx.slow.test.
mx.slow.test. 60 IN A 127.0.1.7
evil.test. 60 IN MX 10 mx.evil.test.
mx.evil.test. 60 IN A 127.0.1.8
"""

HOSTILE_GREETING = (
    "220 mx.evil.test <script>document.title='pwned'</script> "
    '<a href="javascript:alert(1)">click</a> 100%, a:b'
)
HOSTILE_RCPT = "550 5.1.1 <img src=x onerror=\"document.title='pwned'\"> unknown, %0A::error::x"

# target, extra options, expected exit status
SCENARIOS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "accepted": ("alice@ok.test", ("--expect", "starttls", "--expect", "rcpt=2xx"), 0),
    "greylisted": ("bob@grey.test", ("--expect", "rcpt=2xx"), 69),
    "greeting_421": ("carol@busy.test", (), 75),
    "no_starttls": ("dave@plain.test", ("--expect", "starttls"), 69),
    "untrusted": ("erin@untrusted.test", ("--expect", "tls-trusted"), 69),
    "timeout": ("frank@slow.test", ("--timeout", "0.5"), 75),
    "hostile": ("mallory@evil.test", (), 69),
}


async def _silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(10)  # accepts, never greets: the greeting times out


async def _hostile(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(HOSTILE_GREETING.encode() + b"\r\n")
    await w.drain()
    while line := await r.readline():
        verb = line.split()[0].upper() if line.split() else b""
        reply = {b"RCPT": HOSTILE_RCPT.encode(), b"QUIT": b"221 bye"}.get(verb, b"250 ok")
        w.write(reply + b"\r\n")
        await w.drain()
        if verb == b"QUIT":
            return


@dataclass
class Lab:
    dns_port: int
    smtp_port: int
    cafile: str
    seen: dict[str, Any] = field(default_factory=dict)

    def args(self, command: str, *extra: str) -> list[str]:
        return [
            command,
            "--nameserver",
            f"127.0.0.1:{self.dns_port}",
            "--port",
            str(self.smtp_port),
            *extra,
        ]

    def probe(self, scenario: str, fmt: str, *extra: str) -> tuple[int, str]:
        """`probe --format FMT` for a scenario (remembered: each runs once per format)."""
        key = (scenario, fmt, extra)
        if key not in self.seen:
            target, options, _ = SCENARIOS[scenario]
            args = self.args("probe", "--timeout", "2", "--helo", "probe.example")
            args += ["--cafile", self.cafile, *options, "--format", fmt, *extra, target]
            r = invoke(*args)
            assert r.exception is None or isinstance(r.exception, SystemExit), r.output
            self.seen[key] = (r.exit_code, r.stdout)
        result: tuple[int, str] = self.seen[key]
        return result


def invoke(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin, env={"NO_COLOR": "1", "LANG": "C"})


def start_lab(tmp: str) -> Iterator[Lab]:
    ca, other = trustme.CA(), trustme.CA()
    cafile = f"{tmp}/ca.pem"
    ca.cert_pem.write_to_path(cafile)
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.ok.test", "mx2.ok.test").configure_cert(good)
    bad = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("mx.untrusted.test").configure_cert(bad)
    lt = LoopThread()
    dns = ZoneDNS(ZONE)
    servers: list[asyncio.Server] = []
    try:
        dns_port = lt.run(dns.start())
        ok = lt.run(
            start_smtp(Scripted(), host="127.0.1.2", tls_context=good, hostname="mx.ok.test")
        )
        servers.append(ok)
        port = port_of(ok)
        grey = "450 4.2.0 Recipient address rejected: Greylisted, see http://postgrey.example/help"
        for host, handler, kw in (
            ("127.0.1.3", Scripted(rcpt={"": grey}), {"hostname": "mx.grey.test"}),
            ("127.0.1.4", Scripted(), {"greeting": "421 4.3.2 Service busy, try later"}),
            ("127.0.1.5", Scripted(), {"hostname": "mx.plain.test"}),
            ("127.0.1.6", Scripted(), {"hostname": "mx.untrusted.test", "tls_context": bad}),
        ):
            servers.append(lt.run(start_smtp(handler, host=host, port=port, **kw)))
        servers.append(lt.run(start_raw(_silent, host="127.0.1.7", port=port)))
        servers.append(lt.run(start_raw(_hostile, host="127.0.1.8", port=port)))
        yield Lab(dns_port, port, cafile)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "source", "wbr"}


@dataclass
class El:
    tag: str
    attrs: dict[str, str]
    children: list[El] = field(default_factory=list)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> Iterator[El]:
        yield self
        for c in self.children:
            yield from c.iter()

    def find(self, tag: str, cls: str | None = None) -> list[El]:
        return [e for e in self.iter() if e.tag == tag and (cls is None or cls in e.classes)]

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class Dom(HTMLParser):
    """A small tree of the page: enough to check structure (html.parser does no nesting)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#root", {})
        self.stack = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(El(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        raise AssertionError(f"stray </{tag}>")

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(El("#text", {}, text=data))
