"""`smtp-probe probe` end to end: loopback DNS and SMTP servers, in-process and as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from probe.cli import cli
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_smtp
from tests.conftest import valid, valid_lines

ZONE = """
ok.test. 60 IN MX 10 mx.ok.test.
mx.ok.test. 60 IN A 127.0.0.2
grey.test. 60 IN MX 10 mx.grey.test.
mx.grey.test. 60 IN A 127.0.0.3
walk.test. 60 IN MX 10 busy.walk.test.
walk.test. 60 IN MX 20 mx.ok.test.
busy.walk.test. 60 IN A 127.0.0.4
null.test. 60 IN MX 0 .
null.test. 60 IN A 127.0.0.2
implicit.test. 60 IN A 127.0.0.2
two.test. 60 IN MX 10 mx.ok.test.
two.test. 60 IN MX 20 mx.grey.test.
down.test. 60 IN MX 10 mx.down.test.
mx.down.test. 60 IN A 127.0.0.5
bücher.test. 60 IN MX 10 mx.ok.test.
xn--bcher-kva.test. 60 IN MX 10 mx.ok.test.
"""


@dataclass
class Lab:
    dns_port: int
    smtp_port: int
    cafile: str

    def args(self, *extra: str) -> list[str]:
        return [
            "probe",
            "--nameserver",
            f"127.0.0.1:{self.dns_port}",
            "--port",
            str(self.smtp_port),
            "--timeout",
            "2",
            "--helo",
            "probe.example",
            *extra,
        ]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ca = trustme.CA()
    cafile = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.ok.test").configure_cert(sctx)
    lt = LoopThread()
    dns = ZoneDNS(ZONE)
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        ok = lt.run(
            start_smtp(
                Scripted(
                    rcpt={
                        "nobody": "550 5.1.1 <nobody@ok.test>: Recipient address rejected: User unknown"
                    }
                ),
                host="127.0.0.2",
                tls_context=sctx,
                hostname="mx.ok.test",
            )
        )
        servers.append(ok)
        port = port_of(ok)
        servers.append(
            lt.run(
                start_smtp(
                    Scripted(
                        rcpt={
                            "": "450 4.2.0 Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html"
                        }
                    ),
                    host="127.0.0.3",
                    port=port,
                    hostname="mx.grey.test",
                )
            )
        )
        servers.append(
            lt.run(
                start_smtp(
                    Scripted(),
                    host="127.0.0.4",
                    port=port,
                    greeting="421 4.3.2 Service busy, try later",
                )
            )
        )
        # A listener that never accepts, its queue already full: connects time out (loopback only).
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.5", port))
        blackhole.listen(0)
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.5", port))
            fillers.append(c)
        yield Lab(dns_port, port, str(cafile))
        for c in fillers:
            c.close()
        blackhole.close()
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env or {"NO_COLOR": "1", "LANG": "C"})


def test_accepted_with_trusted_starttls(lab: Lab) -> None:
    r = invoke(
        *lab.args(
            "alice@ok.test",
            "--cafile",
            lab.cafile,
            "--expect",
            "starttls",
            "--expect",
            "tls-trusted",
            "--expect",
            "rcpt=2xx",
            "--expect",
            "greeting=220",
            "--expect",
            "greeting-within=5s",
        )
    )
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "mx.ok.test" in out and "<-  220 mx.ok.test" in out
    assert " -> STARTTLS" in out and " ~> RCPT TO:<alice@ok.test>" in out
    assert "Verdict: accepted" in out


def test_unknown_user_is_permanent(lab: Lab) -> None:
    r = invoke(*lab.args("nobody@ok.test", "--cafile", lab.cafile))
    assert r.exit_code == 69, r.output
    assert "<~* 550 5.1.1" in r.stdout
    assert "user_unknown" in r.stdout


def test_greylisting_is_transient(lab: Lab) -> None:
    r = invoke(*lab.args("someone@grey.test"))
    assert r.exit_code == 75, r.output
    assert "greylisted" in r.stdout


def test_walks_past_a_busy_mx(lab: Lab) -> None:
    r = invoke(*lab.args("alice@walk.test", "--format", "json"))
    assert r.exit_code == 0, r.output
    doc = valid(json.loads(r.stdout))
    assert [s["address"] for s in doc["sessions"]] == ["127.0.0.4", "127.0.0.2"]
    first = doc["sessions"][0]["steps"][0]
    assert first["command"] == "CONNECT" and first["reply"]["code"] == 421
    assert first["reply"]["retryable"] is True


def test_json_schema(lab: Lab) -> None:
    r = invoke(*lab.args("nobody@ok.test", "--format", "json", "--cafile", lab.cafile))
    doc = valid(json.loads(r.stdout))
    assert doc["schema"] == "smtp-probe/probe/2"
    assert doc["target"]["domain"] == "ok.test"
    assert doc["mx"] == [
        {
            "host": "mx.ok.test",
            "preference": 10,
            "addresses": ["127.0.0.2"],
            "status": "ok",
            "implicit": False,
            "cname": None,
            "error": None,
            "error_message": None,
        }
    ]
    s = doc["sessions"][0]
    assert {"host", "address", "port", "steps", "tls"} <= set(s)
    assert s["steps"][0]["command"] == "CONNECT"
    rcpt = next(st for st in s["steps"] if st["command"] == "RCPT")
    assert rcpt["reply"]["code"] == 550 and rcpt["reply"]["enhanced"] == "5.1.1"
    assert rcpt["reply"]["category"] == "user_unknown" and rcpt["reply"]["retryable"] is False
    assert rcpt["reply"]["lines"] == [
        "550 5.1.1 <nobody@ok.test>: Recipient address rejected: User unknown"
    ]
    assert isinstance(rcpt["elapsed_ms"], float)
    assert s["tls"]["trusted"] is True and s["tls"]["certificate"]["sans"] == ["mx.ok.test"]
    assert doc["verdict"] == "permanent" and doc["exit_status"] == 69


@pytest.mark.parametrize(
    ("target", "status", "verdict"),
    [
        ("null.test", 68, "null_mx"),
        ("nowhere.test", 68, "no_domain"),
        ("implicit.test", 0, "accepted"),
    ],
)
def test_dns_outcomes(lab: Lab, target: str, status: int, verdict: str) -> None:
    r = invoke(*lab.args(target, "--format", "json"))
    assert r.exit_code == status, r.output
    assert valid(json.loads(r.stdout))["verdict"] == verdict


def test_unmet_expectations_fail_with_the_reply(lab: Lab) -> None:
    r = invoke(*lab.args("nobody@ok.test", "--expect", "rcpt=2xx", "--expect", "tls-trusted"))
    assert r.exit_code == 69
    assert "rcpt=2xx NOT met (550 5.1.1" in r.stdout
    assert "tls-trusted NOT met (certificate not trusted" in r.stdout


def test_usage_errors_exit_64(lab: Lab) -> None:
    for args in (
        lab.args("ok.test", "--rcpt", "a@b.test\r\nDATA"),
        lab.args("ok.test", "--expect", "bogus"),
        lab.args("ok.test", "--helo", "bad name"),
        ["probe", "exa mple.test"],
        ["probe", "--nope"],
    ):
        r = invoke(*args)
        assert r.exit_code == 64, (args, r.output)
        assert "Traceback" not in r.output


def test_idn_domain_is_converted(lab: Lab) -> None:
    r = invoke(*lab.args("bücher.test", "--format", "json", "--quit-after", "ehlo"))
    doc = valid(json.loads(r.stdout))
    assert doc["target"]["domain"] == "xn--bcher-kva.test"
    assert r.exit_code == 0


def test_shortcut_and_subprocess(lab: Lab) -> None:
    """`smtp-probe TARGET` as a real process, with the probe shortcut."""
    args = lab.args("alice@ok.test", "--cafile", lab.cafile)[1:]
    p = subprocess.run(
        [sys.executable, "-m", "probe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert p.returncode == 0, p.stderr
    assert "Verdict: accepted" in p.stdout
    assert p.stderr == ""


def test_all_connects_time_out(lab: Lab) -> None:
    r = invoke(*lab.args("user@down.test", "--timeout", "0.5", "--format", "json"))
    assert r.exit_code == 75, r.output
    doc = valid(json.loads(r.stdout))
    assert doc["verdict"] == "unreachable"
    assert "port 25 may be blocked" in doc["reason"]
    assert doc["sessions"][0]["steps"][0]["error"]["kind"] == "timeout"


def test_all_hosts_and_address_family(lab: Lab) -> None:
    one = valid(json.loads(invoke(*lab.args("alice@two.test", "--format", "json")).stdout))
    assert [s["address"] for s in one["sessions"]] == ["127.0.0.2"]
    r = invoke(*lab.args("alice@two.test", "--all", "--format", "json"))
    doc = valid(json.loads(r.stdout))
    assert [s["address"] for s in doc["sessions"]] == ["127.0.0.2", "127.0.0.3"]
    assert r.exit_code == 75 and doc["verdict"] == "transient"  # the second MX greylists
    six = invoke(*lab.args("ok.test", "-6", "--format", "json"))
    assert six.exit_code == 68 and valid(json.loads(six.stdout))["verdict"] == "no_host"


def test_redact_masks_addresses_and_ips(lab: Lab) -> None:
    for fmt in ("json", "text"):
        r = invoke(*lab.args("nobody@ok.test", "--cafile", lab.cafile, "--redact", "--format", fmt))
        assert r.exit_code == 69
        assert "127.0.0." not in r.stdout and "nobody@" not in r.stdout
        # Issue 14 replaced "***@ok.test" and "x.x.x.x" with numbered placeholders, and the
        # target's own names are hidden too.
        assert "ok.test" not in r.stdout
        assert "user-1@domain-1.example" in r.stdout and "192.0.2.1" in r.stdout


@contextlib.contextmanager
def silent_nameserver() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback UDP port that reads DNS queries and never answers; the list fills on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    queries: list[bytes] = []
    try:
        yield sock.getsockname()[1], queries
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                queries.append(sock.recv(4096))
    finally:
        sock.close()


@pytest.mark.parametrize("option", ["--timeout", "--dns-timeout"])
def test_timeout_bounds_dns_lookups(option: str) -> None:
    # At the default 8 s a lookup retries every 3 s; bounded at 0.5 s it asks exactly once.
    with silent_nameserver() as (port, queries):
        r = invoke(
            "probe", "user@silent.test", "--nameserver", f"127.0.0.1:{port}", option, "0.5",
            "--format", "json",
        )  # fmt: skip
    assert r.exit_code == 75, r.output
    doc = valid(json.loads(r.stdout))
    assert doc["dns"]["status"] == "timeout"
    assert len(queries) == 1


def test_timeout_bounds_dns_lookups_in_batch(tmp_path: Any) -> None:
    inputs = tmp_path / "targets.txt"
    inputs.write_text("a@silent1.test\nb@silent2.test\n")
    with silent_nameserver() as (port, queries):
        r = invoke("batch", str(inputs), "--nameserver", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert r.exit_code == 0, r.output
    records = valid_lines(r.stdout)
    assert sorted(rec["dns"]["status"] for rec in records) == ["timeout", "timeout"]
    assert len(queries) == 2  # one per domain, no retry
