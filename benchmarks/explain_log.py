"""Explaining a mail log: `explain --summary -` against a bare loop, and memory on a big log.

    python benchmarks/explain_log.py              # 1,000,000 lines, then a 200 MB log
    python benchmarks/explain_log.py --quick      # 100,000 lines, then a 20 MB log

The log is synthetic Postfix, made here (nothing big is committed): each accepted message
leaves its connect, client, cleanup, queue, delivery, removal and disconnect lines, among
postscreen, TLS, anvil and warning lines; about one line in eight holds a reply (deliveries,
deferrals, bounces and NOQUEUE rejects), as in a real MX's log. Prints figures and ratios;
asserts nothing.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "probe"]

# The bare loop: read each line, decode it, and look for a reply code with one regex.
BARE = (
    "import re, sys\n"
    "code = re.compile(r'(?<![0-9])[2-5][0-9][0-9][ -]')\n"
    "n = 0\n"
    "for raw in sys.stdin.buffer:\n"
    "    if code.search(raw.decode('utf-8', 'backslashreplace')):\n"
    "        n += 1\n"
    "print(n)\n"
)

_HOSTS = ("mx.example.org", "mail.example.net", "smtp.example.com", "in1.example.de")
_REFUSALS = (
    "450 4.7.25 Client host rejected: cannot find your hostname, [{ip}]",
    "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org",
    "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
    "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see http://postgrey.example/",
    "504 5.5.2 <box{n}>: Helo command rejected: need fully-qualified hostname",
)
_REMOTE = (
    "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
    "452 4.2.2 <{rcpt}>: Mailbox full (in reply to RCPT TO command)",
    "421 4.7.0 Try again later, closing connection. (in reply to MAIL FROM command)",
    "550-5.7.26 This mail is unauthenticated, which poses a security risk to the 550-5.7.26 "
    "sender and Gmail users, and has been blocked. 550 5.7.26 gsmtp (in reply to end of DATA "
    "command)",
)


class _Log:
    """Lines of one synthetic Postfix log, in the order a busy MX writes them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def _head(self, proc: str) -> str:
        t = self.n // 40
        pid = 1000 + self.rng.randrange(3000)
        return f"Nov 22 {t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d} mx1 postfix/{proc}[{pid}]:"

    def _ip(self) -> str:
        r = self.rng.randrange
        return f"{r(1, 224)}.{r(256)}.{r(256)}.{r(1, 255)}"

    def _message(self) -> Iterator[str]:
        qid = f"4Q{self.n:08X}z"
        ip, n = self._ip(), self.n
        client = f"client{n % 5000}.example.com[{ip}]"
        rcpt = f"user{n % 20000}@{self.rng.choice(_HOSTS)}"
        yield f"{self._head('smtpd')} connect from {client}"
        yield f"{self._head('smtpd')} Anonymous TLS connection established from {client}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
        yield f"{self._head('smtpd')} {qid}: client={client}"
        yield f"{self._head('cleanup')} {qid}: message-id=<{n}.{ip}@example.com>"
        yield f"{self._head('qmgr')} {qid}: from=<sender{n % 700}@example.com>, size={1000 + n % 90000}, nrcpt=1 (queue active)"
        relay = self.rng.choice(_HOSTS)
        where = f"relay={relay}[192.0.2.{n % 250}]:25, delay=0.{n % 90}, delays=0.01/0/0.1/0.2"
        roll = self.rng.random()
        if roll < 0.9:
            yield f"{self._head('smtp')} {qid}: to=<{rcpt}>, {where}, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {n:X})"
        else:
            reply = self.rng.choice(_REMOTE).format(rcpt=rcpt)
            status = "deferred" if reply[0] == "4" else "bounced"
            dsn = reply[4:9]
            yield f"{self._head('smtp')} {qid}: to=<{rcpt}>, {where}, dsn={dsn}, status={status} (host {relay}[192.0.2.{n % 250}] said: {reply})"
        yield f"{self._head('qmgr')} {qid}: removed"
        yield f"{self._head('smtpd')} disconnect from {client} ehlo=1 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=6"

    def _noise(self) -> Iterator[str]:
        ip = self._ip()
        roll = self.rng.random()
        if roll < 0.35:
            yield f"{self._head('postscreen')} CONNECT from [{ip}]:{40000 + self.n % 20000} to [192.0.2.1]:25"
            yield f"{self._head('postscreen')} PASS OLD [{ip}]:{40000 + self.n % 20000}"
        elif roll < 0.5:
            yield f"{self._head('smtpd')} warning: hostname host-{ip.replace('.', '-')}.example does not resolve to address {ip}: Name or service not known"
        elif roll < 0.65:
            yield f"{self._head('smtpd')} lost connection after EHLO from unknown[{ip}]"
        elif roll < 0.75:
            yield f"{self._head('anvil')} statistics: max connection rate 3/60s for (smtp:{ip}) at Nov 22 09:00:01"
        else:
            refusal = self.rng.choice(_REFUSALS).format(
                ip=ip, rcpt=f"u{self.n}@example.net", n=self.n
            )
            yield f"{self._head('smtpd')} NOQUEUE: reject: RCPT from unknown[{ip}]: {refusal}; from=<a{self.n}@example.com> to=<u{self.n}@example.net> proto=ESMTP helo=<box{self.n}>"

    def lines(self) -> Iterator[str]:
        while True:
            self.n += 1
            yield from self._message() if self.rng.random() < 0.55 else self._noise()


def make_log(path: Path, *, lines: int = 0, size: int = 0, seed: int = 1) -> tuple[int, int]:
    """Write a log of `lines` lines (or of about `size` bytes); return (lines, bytes)."""
    written = count = 0
    with path.open("w", encoding="utf-8") as f:
        for line in _Log(seed).lines():
            if (lines and count >= lines) or (size and written >= size):
                break
            f.write(line + "\n")
            written += len(line) + 1
            count += 1
    return count, written


def _child(cmd: list[str], stdin: Path, keep: bool = False) -> tuple[float, float, str]:
    """Run cmd with stdin from a file, in a fresh wrapper that measures it: (seconds, peak RSS
    of the child in MB, its output if `keep`, else nothing: explaining a 200 MB log prints
    gigabytes, which go to /dev/null)."""
    out = "subprocess.PIPE" if keep else "subprocess.DEVNULL"
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"p = subprocess.run({cmd!r}, stdin=open({str(stdin)!r}, 'rb'), stdout={out},"
        " stderr=subprocess.DEVNULL)\n"
        "sys.stderr.write(f'{time.perf_counter() - t} "
        "{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
        "sys.stdout.buffer.write(p.stdout or b'')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=_env())
    secs, rss = p.stderr.decode().split()[-2:]
    return float(secs), float(rss) / 1024, p.stdout.decode("utf-8", "replace")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "LC_ALL": "C"}


def _best(run: Callable[[], float], times: int) -> float:
    return min(run() for _ in range(times))


def bench_ratio(lines: int, runs: int = 3) -> list[tuple[str, str]]:
    """explain --summary - against the bare loop, on the same file (best of `runs`)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        n, size = make_log(log, lines=lines)
        bare_cmd = [sys.executable, "-c", BARE]
        summary_cmd = [*CLI, "explain", "--summary", "--format", "json", "-"]
        bare = summary = float("inf")
        for _ in range(runs):  # in turns, so that load from elsewhere hits both alike
            bare = min(bare, _child(bare_cmd, log)[0])
            secs, _, out = _child(summary_cmd, log, keep=True)
            summary = min(summary, secs)
        replies = json.loads(out)["replies"]
        jsonl = _child([*CLI, "explain", "--format", "jsonl", "-"], log)[0]
    return [
        (
            f"synthetic Postfix log: {n:,} lines, {size / 1e6:.0f} MB",
            f"{replies / n:.1%} of the lines hold a reply",
        ),
        ("bare loop: read, decode, one regex a line", f"{bare:.2f} s"),
        (
            "explain --summary -",
            f"{summary:.2f} s ({summary / bare:.1f}x the bare loop; aim <= 3)",
        ),
        ("explain --format jsonl -", f"{jsonl:.2f} s ({jsonl / bare:.1f}x the bare loop)"),
    ]


def bench_big(megabytes: int) -> list[tuple[str, str]]:
    """Every output format on a big log: time and the child's peak memory."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "big.log"
        n, size = make_log(log, size=megabytes * 1_000_000, seed=2)
        rows.append((f"synthetic Postfix log: {size / 1e6:.0f} MB", f"{n:,} lines"))
        for args in (["--summary"], [], ["--format", "jsonl"], ["--format", "json"]):
            secs, peak, _ = _child([*CLI, "explain", *args, "-"], log)
            label = " ".join(["explain", *args, "-"])
            rows.append(
                (f"{label}, {size / 1e6:.0f} MB", f"{secs:.1f} s, peak {peak:.0f} MB (aim < 100)")
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = ap.parse_args()
    # Bytecode compiled first, as pip does on install (and run.py): compiling every module at
    # each start would add its own memory to the peaks measured here.
    compileall.compile_dir(ROOT / "probe", quiet=1)
    sections = [
        (
            "explain --summary against a bare loop",
            bench_ratio(100_000 if args.quick else 1_000_000),
        ),
        ("explain on a big log (time, peak memory)", bench_big(20 if args.quick else 200)),
    ]
    for title, rows in sections:
        print(f"\n{title}")
        for name, value in rows:
            print(f"  {name:<52} {value}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - start:.0f} s)")
