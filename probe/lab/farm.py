"""A farm of loopback MX servers for benchmarks: `python -m probe.lab.farm LISTENERS DOMAINS`.

Each listener (127.0.0.2, 127.0.0.3, ...) behaves like a real MX: STARTTLS with a certificate
made at start, 250 for recipients, 550 5.1.1 for those starting with "nobody". A DNS server on
127.0.0.1 maps d0.test ... d{DOMAINS-1}.test to them. Prints one JSON line with the ports and
the CA file, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import tempfile
from pathlib import Path

from probe.lab.dns import ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_smtp


async def main(listeners: int, domains: int) -> None:
    import trustme

    ca = trustme.CA()
    hosts = [f"127.0.0.{i}" for i in range(2, 2 + listeners)]
    names = [f"mx{j}.farm.test" for j in range(listeners)]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    zone = [f"d{i}.test. 60 IN MX 10 mx{i % listeners}.farm.test." for i in range(domains)]
    zone += [f"{n}. 60 IN A {h}" for n, h in zip(names, hosts, strict=True)]
    dns = ZoneDNS("\n".join(zone))
    dns_port = await dns.start()
    port = 0
    servers = []
    for n, h in zip(names, hosts, strict=True):
        srv = await start_smtp(
            Scripted(rcpt={"nobody": "550 5.1.1 <nobody>: User unknown"}),
            host=h,
            port=port,
            tls_context=ctx,
            hostname=n,
        )
        port = port_of(srv)
        servers.append(srv)
    tmp = Path(tempfile.mkdtemp(prefix="smtp-probe-farm-"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    print(
        json.dumps(
            {"dns_port": dns_port, "smtp_port": port, "cafile": str(tmp / "ca.pem"), "hosts": hosts}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for s in servers:
        s.close()
    await dns.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
