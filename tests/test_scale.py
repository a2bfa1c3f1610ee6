"""Beyond one machine: the per-MX fact cache (in a run and in a file), shards by MX provider
and their merge, and source addresses. Real loopback servers and DNS throughout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import GreetingSMTP, Scripted
from probe.mxcache import MxStore, decode, encode
from probe.result import Outcome, Session, Step, TlsInfo
from probe.shard import ShardError, best_mx, parse_shard, registrable, shard_of

HOSTS = [f"127.0.0.{i}" for i in range(2, 7)]
PROVIDERS = 12
N = 240
# Providers 0-3 have their MX under a second-level suffix: the rule must keep them whole.
SUFFIX = {0: "co.uk", 1: "com.au", 2: "co.uk", 3: "co.jp"}


def provider_domain(j: int) -> str:
    return f"p{j}.{SUFFIX.get(j, 'test')}"


def provider_of(i: int) -> int:
    return i % PROVIDERS


@dataclass
class Seen:
    total: int = 0
    peers: list[tuple[str, str]] = field(default_factory=list)  # (listener, peer address)
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def recording_smtp(seen: Seen, listener: str, loop: asyncio.AbstractEventLoop) -> Any:
    class Recording(GreetingSMTP):
        def connection_made(self, transport: Any) -> None:
            seen.total += 1
            seen.peers.append((listener, transport.get_extra_info("peername")[0]))
            seen.active[listener] += 1
            seen.peak[listener] = max(seen.peak[listener], seen.active[listener])
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            seen.active[listener] -= 1
            super().connection_lost(exc)

    return lambda: Recording(
        Scripted(rcpt={"nobody": "550 5.1.1 no such user"}), hostname=f"mx-{listener}", loop=loop
    )


@dataclass
class Farm:
    dns_port: int
    port: int
    seen: Seen


def zone() -> str:
    lines = [f"d{i}.test. 60 IN MX 10 mx.{provider_domain(provider_of(i))}." for i in range(N)]
    lines += [f"mx.{provider_domain(j)}. 60 IN A {HOSTS[j % len(HOSTS)]}" for j in range(PROVIDERS)]
    # A second MX of lower rank under another name: the best MX alone decides the shard.
    lines += [f"d{i}.test. 60 IN MX 20 backup.other{i}.test." for i in range(0, N, 7)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    lt = LoopThread()
    dns = ZoneDNS(zone())
    seen = Seen()
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        port = 0
        for h in HOSTS:
            srv = lt.run(lt.loop.create_server(recording_smtp(seen, h, lt.loop), h, port))
            port = srv.sockets[0].getsockname()[1]
            servers.append(srv)
        yield Farm(dns_port, port, seen)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def base_args(farm: Farm) -> list[str]:
    return [
        "--nameserver",
        f"127.0.0.1:{farm.dns_port}",
        "--port",
        str(farm.port),
        "--timeout",
        "5",
        "--helo",
        "scale.test",
        "--starttls",
        "never",
    ]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def domains(n: int = N) -> list[str]:
    return [f"d{i}.test" for i in range(n)]


def run(farm: Farm, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    r = CliRunner().invoke(cli, ["batch", *args, *base_args(farm)])
    return r.exit_code, [json.loads(x) for x in r.stdout.splitlines()], r.stderr


def sessions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for rec in records for s in rec.get("sessions", ())]


# -- the cache within a run -------------------------------------------------------------------


def test_domains_of_one_provider_reuse_its_session_and_say_so(farm: Farm, tmp_path: Path) -> None:
    inputs = write(tmp_path / "in.txt", domains())
    before = farm.seen.total
    code, records, err = run(farm, str(inputs), "--quit-after", "ehlo")
    assert code == 0, err
    assert len(records) == N
    ss = sessions(records)
    fresh = [s for s in ss if s["cache"] is None]
    hits = [s for s in ss if s["cache"] is not None]
    # One session per provider's MX name was opened; every other domain reused its facts.
    assert farm.seen.total - before == len(fresh) == PROVIDERS
    assert {s["cache"]["source"] for s in hits} == {"run"}
    assert all(s["cache"]["age_s"] >= 0 for s in hits)
    assert hits[0]["cache"]["facts"] == ["greeting", "extensions", "tls", "certificate", "steps"]
    assert f"{len(hits)} of {len(ss)} sessions from the MX cache" in err


def test_with_recipients_only_the_connection_facts_are_reused(farm: Farm, tmp_path: Path) -> None:
    # Grouped by provider, as a kept connection serves the next target of its MX name.
    grouped = [j + PROVIDERS * m for j in range(PROVIDERS) for m in range(5)]
    inputs = write(tmp_path / "in.txt", [f"user{i}@d{i}.test" for i in grouped])
    code, records, err = run(farm, str(inputs), "--concurrency", "2")
    assert code == 0, err
    ss = sessions(records)
    reused = [s for s in ss if s["reused"]]
    assert reused, "kept connections were expected"
    for s in ss:
        if s["reused"]:
            assert s["cache"]["source"] == "connection"
            assert s["cache"]["facts"] == ["greeting", "extensions", "tls", "certificate"]
            # The transaction itself is this target's: its RCPT names this target's user.
            rcpt = [st for st in s["steps"] if st["command"] == "RCPT"]
            assert rcpt and rcpt[-1]["reply"]["code"] == 250
        else:
            assert s["cache"] is None
    assert all(rec["verdict"] == "accepted" for rec in records)


# -- the cache file -------------------------------------------------------------------------


def test_a_second_run_takes_the_facts_from_the_file(farm: Farm, tmp_path: Path) -> None:
    inputs = write(tmp_path / "in.txt", domains(60))
    db = tmp_path / "mx.sqlite"
    before = farm.seen.total
    code, first, err = run(farm, str(inputs), "--quit-after", "ehlo", "--cache", str(db))
    assert code == 0, err
    opened = farm.seen.total - before
    assert opened == PROVIDERS
    with closing(MxStore.open(str(db))) as store:
        assert store.count() == PROVIDERS

    before = farm.seen.total
    code, second, err = run(farm, str(inputs), "--quit-after", "ehlo", "--cache", str(db))
    assert code == 0, err
    assert farm.seen.total == before  # no session at all
    assert {s["cache"]["source"] for s in sessions(second)} == {"file"}
    by_line = {r["line"]: r for r in first}
    for rec in second:
        assert rec["verdict"] == by_line[rec["line"]]["verdict"]
        assert rec["sessions"][0]["extensions"] == by_line[rec["line"]]["sessions"][0]["extensions"]

    # Facts older than --max-age are not used: the sessions are opened again.
    time.sleep(0.05)
    code, third, err = run(
        farm, str(inputs), "--quit-after", "ehlo", "--cache", str(db), "--max-age", "0.01"
    )
    assert code == 0, err
    assert farm.seen.total - before == PROVIDERS
    assert all(s["cache"] is None or s["cache"]["source"] == "run" for s in sessions(third))


def sample_session() -> Session:
    greeting = Step("CONNECT", None, None, 1.5)
    tls = TlsInfo(
        offered=True, attempted=True, ok=True, protocol="TLSv1.3", chain=(b"0\x82\x01\x00der",)
    )
    return Session("mx.p1.test", "127.0.0.3", 25, (greeting,), tls, (("SIZE", "1000"),))


def test_store_hits_misses_and_expiry(tmp_path: Path) -> None:
    store = MxStore.open(str(tmp_path / "c.sqlite"))
    s = sample_session()
    assert store.get("k", 3600, now=1000.0) is None  # a miss
    store.put("k", s, now=1000.0)
    got = store.get("k", 3600, now=1000.0 + 3599)
    assert got is not None and got[0] == s and got[1] == pytest.approx(3599)
    assert store.get("k", 3600, now=1000.0 + 3601) is None  # expired
    assert store.get("other", 3600, now=1000.0) is None
    store.close()
    assert decode(encode(s)) == s


def test_a_damaged_entry_is_a_miss_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = MxStore.open(str(path))
    store.put("k", sample_session(), now=time.time())
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE facts SET data = ?", ('{"host": 7}',))
    db.commit()
    db.close()
    with closing(MxStore.open(str(path))) as store:
        assert store.get("k", 3600) is None


@pytest.mark.parametrize("kind", ["garbage", "foreign", "directory", "version"])
def test_a_corrupt_or_foreign_file_is_refused_with_one_line(
    farm: Farm, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "cache"
    if kind == "garbage":
        path.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    elif kind == "foreign":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE notes (body TEXT)")
        db.commit()
        db.close()
    elif kind == "directory":
        path.mkdir()
    else:
        MxStore.open(str(path)).close()
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = 99")
        db.close()
    before = path.read_bytes() if path.is_file() else None
    inputs = write(tmp_path / "in.txt", domains(3))
    r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), "--cache", str(path)])
    assert r.exit_code == 65
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smtp-probe: error: "), r.stderr
    assert "Traceback" not in r.stderr
    if before is not None:
        assert path.read_bytes() == before  # refused, and left as it was


def test_an_interrupted_run_leaves_a_consistent_cache(farm: Farm, tmp_path: Path) -> None:
    # Many MX names, so that facts are being written when the run is killed.
    inputs = write(tmp_path / "in.txt", domains())
    db, out = tmp_path / "mx.sqlite", tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "probe", "batch", str(inputs), *base_args(farm)]
    cmd += ["--quit-after", "ehlo", "--cache", str(db), "--output", str(out), "--concurrency", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000):
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    store = MxStore.open(str(db))  # passes SQLite's check, and is ours
    kept = store.count()
    assert 1 <= kept <= PROVIDERS
    with closing(sqlite3.connect(db)) as check:
        rows = check.execute("SELECT key FROM facts").fetchall()
    for (key,) in rows:
        assert store.get(key, 3600) is not None  # every fact kept is whole
    store.close()
    # The rerun resumes: every line once, and no fact learnt twice. (Connections the killed
    # run had begun may still reach the farm: counted first, so that they are not the rerun's.)
    before = _settled(farm.seen)
    again = ["--quit-after", "ehlo", "--cache", str(db), "--output", str(out), "--resume"]
    r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), *again])
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x)["line"] for x in out.read_text().splitlines() if x.endswith("}")]
    assert sorted(lines) == list(range(1, N + 1))
    assert farm.seen.total - before <= PROVIDERS - kept


def _settled(seen: Seen, quiet: float = 0.5) -> int:
    """The farm's count of connections once it has not moved for `quiet` seconds."""
    last, since = seen.total, time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        if seen.total != last:
            last, since = seen.total, time.monotonic()
    return last


# -- shards --------------------------------------------------------------------------------------


def test_registrable_domains_by_the_built_in_rule() -> None:
    assert registrable("mx1.mail.example.com.") == "example.com"
    assert registrable("aspmx.l.google.com") == "google.com"
    assert registrable("mx.p0.co.uk") == "p0.co.uk"
    assert registrable("eu-smtp-inbound-1.mimecast.com.au") == "mimecast.com.au"
    assert registrable("MX.Example.ORG") == "example.org"
    assert registrable("[192.0.2.1]") == "192.0.2.1"
    assert best_mx([(20, "b.test"), (10, "z.other.test"), (10, "a.other.test")]) == "a.other.test"
    assert shard_of("google.com", 7) == shard_of("google.com", 7)
    assert {shard_of(f"p{j}.test", 4) for j in range(100)} == {1, 2, 3, 4}


@pytest.mark.parametrize("bad", ["0/3", "4/3", "3", "a/b", "1/0", "1/٣", "-1/3"])
def test_bad_shard_values_are_usage_errors(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ShardError):
        parse_shard(bad)
    inputs = write(tmp_path / "in.txt", ["d1.test"])
    r = CliRunner().invoke(cli, ["batch", str(inputs), "--shard", bad])
    assert r.exit_code == 64
    assert r.stderr.startswith("smtp-probe: error: --shard")


def test_shards_merged_give_every_line_once_and_a_provider_never_spans_two(
    farm: Farm, tmp_path: Path
) -> None:
    lines = [*domains(), "not a target!", "", "# comment", "[127.0.0.5]"]
    inputs = write(tmp_path / "in.txt", lines)
    n = 3
    outs = []
    for k in range(1, n + 1):
        out = tmp_path / f"shard{k}.jsonl"
        code, _, err = run(farm, str(inputs), "--quit-after", "ehlo", "--shard", f"{k}/{n}")
        assert code == 0, err
        # Again with --output, as each machine would run it.
        args = ["--quit-after", "ehlo", "--shard", f"{k}/{n}", "--output", str(out)]
        r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), *args])
        assert r.exit_code == 0, r.stderr
        outs.append(out)
    shard_of_provider: dict[int, set[int]] = defaultdict(set)
    for k, out in enumerate(outs, 1):
        for raw in out.read_text().splitlines():
            rec = json.loads(raw)
            if rec["line"] <= N:
                shard_of_provider[provider_of(rec["line"] - 1)].add(k)
    assert all(len(ks) == 1 for ks in shard_of_provider.values()), shard_of_provider
    assert len(shard_of_provider) == PROVIDERS
    assert len({k for ks in shard_of_provider.values() for k in ks}) > 1  # it did split

    merged = tmp_path / "all.jsonl"
    r = CliRunner().invoke(cli, ["merge", str(inputs), *map(str, outs), "--output", str(merged)])
    assert r.exit_code == 0, r.stderr
    got = sorted(json.loads(x)["line"] for x in merged.read_text().splitlines())
    assert got == [*range(1, N + 2), N + 4]  # the blank line and the comment have no record
    assert f"merged {N + 2} of {N + 2} input lines from {n} files" in r.stderr

    # A shard left out, or given twice, is reported and the exit status says so.
    r = CliRunner().invoke(cli, ["merge", str(inputs), str(outs[0]), str(outs[1]), str(outs[1])])
    assert r.exit_code == 65
    assert "lines missing: " in r.stderr and "recorded twice" in r.stderr
    missing = len(outs[2].read_text().splitlines())
    assert f"{missing} lines missing" in r.stderr
    out_lines = [json.loads(x)["line"] for x in r.stdout.splitlines()]
    assert len(out_lines) == len(set(out_lines))


def test_workers_keep_to_their_shard(farm: Farm, tmp_path: Path) -> None:
    inputs = write(tmp_path / "in.txt", domains(120))
    got: list[int] = []
    for k in (1, 2):
        code, records, err = run(
            farm, str(inputs), "--quit-after", "ehlo", "--shard", f"{k}/2", "--workers", "2"
        )
        assert code == 0, err
        got += [r["line"] for r in records]
    assert sorted(got) == list(range(1, 121))


# -- source addresses ----------------------------------------------------------------------


def test_source_addresses_take_turns_for_each_provider(farm: Farm, tmp_path: Path) -> None:
    # Providers 0 and 5 share the listener 127.0.0.2; each must use both source addresses.
    inputs = write(tmp_path / "in.txt", [f"user{i}@d{i}.test" for i in range(48)])
    start = len(farm.seen.peers)
    code, records, err = run(
        farm,
        str(inputs),
        "--reuse",
        "1",
        "--source-address",
        "127.0.0.7",
        "--source-address",
        "127.0.0.8",
    )
    assert code == 0, err
    assert all(r["verdict"] == "accepted" for r in records)
    peers = farm.seen.peers[start:]
    assert len(peers) == 48
    assert {p for _, p in peers} == {"127.0.0.7", "127.0.0.8"}
    per_listener: dict[str, list[str]] = defaultdict(list)
    for listener, peer in peers:
        per_listener[listener].append(peer)
    for used in per_listener.values():
        assert abs(used.count("127.0.0.7") - used.count("127.0.0.8")) <= 2


def test_a_bad_source_address_is_a_usage_error(tmp_path: Path) -> None:
    inputs = write(tmp_path / "in.txt", ["d1.test"])
    r = CliRunner().invoke(cli, ["batch", str(inputs), "--source-address", "not-an-ip"])
    assert r.exit_code == 64 and "--source-address" in r.stderr


def test_session_round_trip_keeps_outcome() -> None:
    s = sample_session()._replace(outcome=Outcome.QUIT_AFTER_EHLO)
    assert decode(json.loads(json.dumps(encode(s)))).outcome is Outcome.QUIT_AFTER_EHLO
