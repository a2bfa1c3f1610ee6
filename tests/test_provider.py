"""Per-provider budgets (`batch --per-provider`, `--provider-rate`): one provider's MX hosts on
several loopback addresses, the servers counting sessions for the provider as a whole."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.config import BatchLimits
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import GreetingSMTP, Scripted
from probe.limits import Limits, provider_of

# Provider p1.test has four MX hosts, each on an address of its own; q.test has one.
P1 = {f"mx{k}.p1.test": f"127.0.0.{k + 1}" for k in range(1, 5)}
Q = {"mx.q.test": "127.0.0.6"}
LISTENERS = {**dict.fromkeys(P1.values(), "p1.test"), **dict.fromkeys(Q.values(), "q.test")}
N = 200


def mx_of(i: int) -> str:
    return "mx.q.test" if i % 5 == 4 else f"mx{i % 5 + 1}.p1.test"


@dataclass
class Tally:
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def clear(self) -> None:
        self.peak.clear()
        self.starts.clear()


def tallying_smtp(tally: Tally, listener: str, loop: asyncio.AbstractEventLoop) -> Any:
    provider = LISTENERS[listener]

    class Tallying(GreetingSMTP):
        def connection_made(self, transport: Any) -> None:
            tally.active[provider] += 1
            tally.peak[provider] = max(tally.peak[provider], tally.active[provider])
            tally.starts[provider].append(time.monotonic())
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            tally.active[provider] -= 1
            super().connection_lost(exc)

        async def _handle_client(self) -> None:
            # A slow greeting keeps sessions open long enough to overlap.
            await asyncio.sleep(0.05)
            await super()._handle_client()

    return lambda: Tallying(Scripted(), hostname=f"mx-{listener}", loop=loop)


@dataclass
class ProviderFarm:
    dns_port: int
    port: int
    tally: Tally


def zone() -> str:
    lines = [f"d{i}.test. 60 IN MX 10 {mx_of(i)}." for i in range(N)]
    lines += [f"{name}. 60 IN A {addr}" for name, addr in {**P1, **Q}.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def provider_farm() -> Iterator[ProviderFarm]:
    lt = LoopThread()
    dns = ZoneDNS(zone())
    tally = Tally()
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        port = 0
        for addr in LISTENERS:
            srv = lt.run(lt.loop.create_server(tallying_smtp(tally, addr, lt.loop), addr, port))
            port = srv.sockets[0].getsockname()[1]
            servers.append(srv)
        yield ProviderFarm(dns_port, port, tally)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def farm_args(farm: ProviderFarm) -> list[str]:
    return [
        *("--nameserver", f"127.0.0.1:{farm.dns_port}", "--port", str(farm.port)),
        *("--timeout", "10", "--helo", "provider.test", "--starttls", "never"),
        # One connection per session: the servers then count sessions.
        *("--reuse", "1"),
    ]


def targets(n: int = N) -> list[str]:
    # Recipients: each target opens a session of its own (no facts shared between domains).
    return [f"user{i}@d{i}.test" for i in range(n)]


def run_batch(farm: ProviderFarm, tmp_path: Path, n: int, *args: str) -> list[dict[str, Any]]:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(targets(n)) + "\n")
    farm.tally.clear()
    r = CliRunner().invoke(cli, ["batch", str(source), *args, *farm_args(farm)])
    assert r.exit_code == 0, r.stderr
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(rec["line"] for rec in records) == list(range(1, n + 1))
    assert all(rec.get("verdict") == "accepted" for rec in records), records[:2]
    return records


def test_the_provider_is_the_registrable_domain_of_the_mx_name_or_the_address() -> None:
    assert provider_of("mx2.p1.test", "127.0.0.3") == "p1.test"
    assert provider_of("aspmx.l.google.com", "192.0.2.1") == "google.com"
    assert provider_of("mx.example.co.uk", "192.0.2.1") == "example.co.uk"
    assert provider_of("192.0.2.7", "192.0.2.7") == "192.0.2.7"  # an address literal
    assert provider_of("[2001:db8::1]", "2001:db8::1") == "2001:db8::1"


def test_without_a_provider_limit_the_provider_sees_more(
    provider_farm: ProviderFarm, tmp_path: Path
) -> None:
    # The control: the farm can show a breach (per-host 2 on four addresses allows 8).
    run_batch(provider_farm, tmp_path, 120, "--concurrency", "20", "--per-host", "2")
    assert provider_farm.tally.peak["p1.test"] > 3


def test_sessions_to_one_provider_never_exceed_per_provider(
    provider_farm: ProviderFarm, tmp_path: Path
) -> None:
    args = ("--concurrency", "20", "--per-host", "2", "--per-provider", "3")
    run_batch(provider_farm, tmp_path, 120, *args)
    assert provider_farm.tally.peak["p1.test"] == 3
    assert len(provider_farm.tally.starts["p1.test"]) == 96  # every p1 target had its session
    # The other provider has a budget of its own, not a share of p1's.
    assert 1 <= provider_farm.tally.peak["q.test"] <= 2


def test_workers_share_the_provider_limit(provider_farm: ProviderFarm, tmp_path: Path) -> None:
    args = ("--concurrency", "20", "--per-host", "2", "--per-provider", "4", "--workers", "2")
    run_batch(provider_farm, tmp_path, 120, *args)
    assert 2 <= provider_farm.tally.peak["p1.test"] <= 4


def test_the_provider_rate_is_honoured(provider_farm: ProviderFarm, tmp_path: Path) -> None:
    rate = 20
    run_batch(provider_farm, tmp_path, 60, "--concurrency", "20", "--provider-rate", str(rate))
    starts = sorted(provider_farm.tally.starts["p1.test"])
    assert len(starts) == 48
    # Started one after another at 1/rate apart: never more than `rate` (and one for a
    # window's edges, one for timer slack) in any second, and the whole run not faster.
    most = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert most <= rate + 2, most
    assert starts[-1] - starts[0] >= 0.8 * (len(starts) - 1) / rate


def test_provider_slots_and_paces_are_not_kept_once_done() -> None:
    async def main() -> tuple[int, int]:
        limits = Limits(BatchLimits(per_provider=1, provider_rate=1000.0))
        for i in range(3000):
            async with limits.provider_slot(f"p{i}.test"):
                await limits.pace(f"p{i}.test")
        await asyncio.sleep(0.01)  # every booked start is past now
        for i in range(3000, 6000):
            await limits.pace(f"p{i}.test")
        return len(limits._slots), len(limits._provider_next)

    slots, paces = asyncio.run(main())
    assert slots == 0
    assert paces < 4000  # the first 3000 providers were dropped, not kept for the run


@pytest.mark.parametrize("bad", ["--per-provider=0", "--provider-rate=0", "--per-provider=x"])
def test_bad_provider_limits_are_usage_errors(bad: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("d1.test\n")
    r = CliRunner().invoke(cli, ["batch", str(source), bad])
    assert r.exit_code == 64
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("smtp-probe: error:")
