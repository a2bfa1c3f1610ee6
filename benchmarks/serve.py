"""Benchmark of `smtp-probe serve` against the benchmark farm, in one run:

- probes per second through the exporter, each scrape a new probe (min_interval 0);
- scrapes per second served from the cache (a module with a long minimum interval);
- the exporter's memory (VmRSS, and its peak VmHWM) after 10,000 scrapes of 1,000 targets.

The exporter runs as its own process (`python -m probe serve`), as in production; the scrapes
come from this one over aiohttp, 50 at a time. Usage: python benchmarks/serve.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import _farm, _stop  # noqa: E402

CONCURRENCY = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def scrape(port: int, targets: list[str], module: str) -> tuple[float, int]:
    """Seconds to scrape every target (CONCURRENCY at once) and how many succeeded."""
    sem = asyncio.Semaphore(CONCURRENCY)
    ok = 0
    url = f"http://127.0.0.1:{port}/probe"
    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(target: str) -> None:
            nonlocal ok
            async with sem, session.get(url, params={"target": target, "module": module}) as r:
                text = await r.text()
                ok += r.status == 200 and "probe_success 1.0" in text

        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in targets))
        return time.perf_counter() - t0, ok


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("the exporter did not start")


def main() -> None:
    quick = "--quick" in sys.argv
    domains = 1000
    farm, info = _farm(5, domains)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "serve.toml"
        module = f"""port = {info["smtp_port"]}
cafile = "{info["cafile"]}"
helo = "bench.test"
rcpt = ["user@d1.test"]
timeout = 5
"""
        config.write_text(
            f"""[server]
nameservers = ["127.0.0.1:{info["dns_port"]}"]
concurrency = {CONCURRENCY}
per_host = {CONCURRENCY}
queue = 100000
cache_size = 100000
[targets]
private = ["127.0.0.0/8"]
[modules.uncached]
min_interval = 0
{module}
[modules.cached]
min_interval = 3600
{module}
""",
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "probe", "serve", "--listen", f"127.0.0.1:{port}"]
        server = subprocess.Popen(
            [*cmd, "--config", str(config)], stdout=subprocess.DEVNULL, env=env
        )
        try:
            wait_for(port)
            run(port, server.pid, domains, quick)
        finally:
            server.terminate()
            server.wait(timeout=10)
            _stop(farm)


def run(port: int, pid: int, domains: int, quick: bool) -> None:
    targets = [f"d{i}.test" for i in range(domains)]
    n = 200 if quick else 1000
    seconds, ok = asyncio.run(scrape(port, targets[:n], "uncached"))
    print(f"uncached: {n} scrapes, each a probe: {n / seconds:.0f} probes/s ({ok} succeeded)")
    seconds, ok = asyncio.run(scrape(port, targets, "cached"))
    print(f"first scrape of {domains} targets (module cached): {domains / seconds:.0f} probes/s")
    rounds = 2 if quick else 10
    seconds, ok = asyncio.run(scrape(port, targets * rounds, "cached"))
    total = domains * rounds
    print(
        f"cached: {total} scrapes of {domains} targets: {total / seconds:.0f} scrapes/s ({ok} ok)"
    )
    mem = memory_kb(pid)
    scrapes = n + domains + total
    print(
        f"exporter memory after {scrapes} scrapes of {domains} targets: "
        f"{mem['VmRSS'] / 1024:.1f} MB (peak {mem['VmHWM'] / 1024:.1f} MB)"
    )


if __name__ == "__main__":
    main()
