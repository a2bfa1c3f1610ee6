"""`smtp-probe demo`: real probes against mail servers started on 127.0.0.1 for the occasion."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from probe.config import ProbeRequest, SessionOptions, Timeouts
from probe.lab.dns import ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_smtp
from probe.messages import msg
from probe.resolve import make_resolver
from probe.result import ProbeResult, Verdict
from probe.runner import probe
from probe.target import parse_target

ZONE = """
demo.test. 60 IN MX 10 mx.demo.test.
mx.demo.test. 60 IN A 127.0.0.1
grey.demo.test. 60 IN MX 10 mx.grey.demo.test.
mx.grey.demo.test. 60 IN A 127.0.0.1
busy.demo.test. 60 IN MX 10 mx.busy.demo.test.
mx.busy.demo.test. 60 IN A 127.0.0.1
nomail.demo.test. 60 IN MX 0 .
"""

UNKNOWN = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table"
GREY = (
    "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/grey.demo.test.html"
)


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    target: str
    server: str  # which demo server answers: normal | grey | busy | none
    expected: Verdict


SCENARIOS = (
    Scenario(
        msg("demo.normal"),
        "alice@demo.test",
        "normal",
        Verdict.ACCEPTED,
    ),
    Scenario(msg("demo.unknown_user"), "nobody@demo.test", "normal", Verdict.PERMANENT),
    Scenario(
        msg("demo.greylisting"),
        "carol@grey.demo.test",
        "grey",
        Verdict.TRANSIENT,
    ),
    Scenario(msg("demo.busy"), "dave@busy.demo.test", "busy", Verdict.TRANSIENT),
    Scenario(
        msg("demo.null_mx"),
        "erin@nomail.demo.test",
        "none",
        Verdict.NULL_MX,
    ),
)


async def run_demo() -> list[tuple[Scenario, str, ProbeResult]]:
    """Start the loopback servers, probe each scenario, stop everything."""
    import trustme

    ca = trustme.CA()
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.demo.test").configure_cert(sctx)
    dns = ZoneDNS(ZONE)
    dns_port = await dns.start()
    normal = await start_smtp(
        Scripted(rcpt={"nobody": UNKNOWN.format(rcpt="nobody@demo.test")}),
        tls_context=sctx,
        hostname="mx.demo.test",
    )
    grey = await start_smtp(
        Scripted(rcpt={"": GREY.format(rcpt="carol@grey.demo.test")}), hostname="mx.grey.demo.test"
    )
    busy = await start_smtp(
        Scripted(),
        greeting="421 4.3.2 mx.busy.demo.test busy, try again later",
        hostname="mx.busy.demo.test",
    )
    ports = {"normal": port_of(normal), "grey": port_of(grey), "busy": port_of(busy), "none": 25}
    out: list[tuple[Scenario, str, ProbeResult]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cafile = Path(tmp) / "demo-ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        resolver = make_resolver([("127.0.0.1", dns_port)], timeout=1.0, lifetime=3.0)
        try:
            for sc in SCENARIOS:
                port = ports[sc.server]
                cmd = f"smtp-probe {sc.target} --nameserver 127.0.0.1:{dns_port}"
                if sc.server != "none":
                    cmd += f" --port {port} --helo demo.client.test"
                if sc.server == "normal":
                    cmd += " --cafile demo-ca.pem"
                req = ProbeRequest(
                    target=parse_target(sc.target),
                    session=SessionOptions(
                        helo="demo.client.test",
                        cafile=str(cafile),
                        timeouts=Timeouts(3, budget=15),
                    ),
                    port=port,
                )
                out.append((sc, cmd, await probe(req, resolver=resolver)))
        finally:
            for srv in (normal, grey, busy):
                srv.close()
            await dns.stop()
    return out
