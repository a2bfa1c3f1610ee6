"""Agreement of `explain --email` with sisimai's answers on a corpus of real bounce emails.

    python benchmarks/bounces.py                          # /work/shared/corpus/bounces
    python benchmarks/bounces.py --corpus DIR --split 3   # also: a held-out third, seed 14
    python benchmarks/bounces.py --verbose                # every disagreement

The corpus (README.md there) has `emails/*.eml` and `expected.tsv`, one row per failed
recipient. Our i-th item of an email is compared with its row i. Measures, per MTA family
and overall (docs/bounce-reasons.md defines them and the reason mapping):

- found: a reply or an enhanced status for the recipient (rows that are bounces);
- status: our enhanced status equals sisimai's, on rows whose status is written in the email;
- perm/temp: our class (5 permanent, 4 temporary) equals the class of sisimai's status
  written in the email, else of its reply code;
- category: our category is one that sisimai's reason maps to.

Non-bounces (feedback reports, vacation replies) count as right when we report no failure.
The time is CPU time per email for reading and interpreting it, without process start-up.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.bounce import read_email  # noqa: E402
from probe.interpret import interpret_reply  # noqa: E402

# sisimai reason -> our categories that agree with it (docs/bounce-reasons.md).
REASONS: dict[str, frozenset[str]] = {
    k: frozenset(v)
    for k, v in {
        "userunknown": {"user_unknown"},
        "mailboxfull": {"mailbox_full"},
        "exceedlimit": {"size", "mailbox_full"},
        "mesgtoobig": {"size"},
        "suspend": {"mailbox_disabled"},
        "hasmoved": {"user_unknown", "mailbox_disabled"},
        "hostunknown": {"dns"},
        "networkerror": {"dns", "unavailable", "loop"},
        "expired": {"expired"},
        "blocked": {"blocklisted", "reputation", "dns", "policy"},
        "requireptr": {"dns"},
        "badreputation": {"reputation", "blocklisted"},
        "spamdetected": {"spam"},
        "virusdetected": {"content"},
        "contenterror": {"content"},
        "notcompliantrfc": {"content", "syntax"},
        "filtered": {"policy", "user_unknown", "spam", "mailbox_disabled"},
        "policyviolation": {"policy", "spam", "content"},
        "rejected": {"policy", "sender_auth", "reputation", "blocklisted", "dns"},
        "authfailure": {"sender_auth"},
        "securityerror": {"tls_required", "auth_required", "auth_failed"},
        "failedstarttls": {"tls_required"},
        "norelaying": {"relay_denied"},
        "ratelimited": {"rate_limited"},
        "toomanyconn": {"rate_limited", "recipients"},
        "systemerror": {"unavailable", "loop", "other"},
        "systemfull": {"unavailable", "mailbox_full"},
        "mailererror": {"other", "unavailable"},
        "notaccept": {"dns", "unavailable", "policy"},
        "onhold": {"other", "unavailable"},
        "syntaxerror": {"syntax", "sequence"},
        "undefined": {"other"},
        "delivered": {"success"},
    }.items()
}
NON_BOUNCE = frozenset({"feedback", "vacation", "not-bounce"})


def load(corpus: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (corpus / "expected.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows[row["file"]].append(row)
    for r in rows.values():
        r.sort(key=lambda x: int(x["recipient_index"]))
    return rows


class Tally:
    def __init__(self) -> None:
        self.n = defaultdict(int)  # type: defaultdict[str, int]
        self.ok = defaultdict(int)  # type: defaultdict[str, int]

    def add(self, measure: str, ok: bool) -> None:
        self.n[measure] += 1
        self.ok[measure] += ok

    def cell(self, measure: str) -> str:
        n = self.n[measure]
        return f"{100 * self.ok[measure] / n:5.1f}% {self.ok[measure]:>3}/{n:<3}" if n else " " * 13


MEASURES = ("found", "status", "permtemp", "category", "nonbounce")


def judge(
    rows: list[dict[str, str]],
    items: list[tuple[str, str | None, int, str]],
    t: Tally,
    log: list[str],
    name: str,
) -> None:
    """Compare our items (enhanced, class, category) with the expected rows of one email."""
    if rows[0]["reason"] in NON_BOUNCE:
        t.add("nonbounce", not items)
        return
    for i, row in enumerate(rows):
        got = items[i] if i < len(items) else None
        t.add("found", got is not None)
        if got is None:
            log.append(f"{name}#{i + 1}: nothing found (want {row['status']} {row['reason']})")
            continue
        enh, _, klass, cat = got
        if row["status_in_email"] == "yes" and row["status"]:
            t.add("status", enh == row["status"])
            if enh != row["status"]:
                log.append(f"{name}#{i + 1}: status {enh} want {row['status']}")
        want_class = row["status"][:1] if row["status_in_email"] == "yes" else row["replycode"][:1]
        if want_class in ("4", "5"):
            t.add("permtemp", str(klass) == want_class)
        allowed = REASONS.get(row["reason"])
        if allowed is not None:
            t.add("category", cat in allowed)
            if cat not in allowed:
                log.append(f"{name}#{i + 1}: category {cat} want {row['reason']} ({got[1]})")


def explain_file(path: Path) -> list[tuple[str, str | None, int, str]]:
    out = []
    for f in read_email(path.read_bytes()):
        i = interpret_reply(f.reply, f.source)
        out.append(
            (
                str(f.reply.enhanced) if f.reply.enhanced else "",
                f.reply.text[:80],
                i.reply_class,
                i.category,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/bounces"))
    ap.add_argument("--split", type=int, default=3, help="hold out 1/N of the emails (0: none)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    expected = load(a.corpus)
    names = sorted(expected)
    held = set(random.Random(a.seed).sample(names, len(names) // a.split)) if a.split else set()
    fams: dict[str, Tally] = defaultdict(Tally)
    total, seen, unseen = Tally(), Tally(), Tally()
    log: list[str] = []
    cpu = 0.0
    for name in names:
        path = a.corpus / "emails" / name
        t0 = time.process_time()
        items = explain_file(path)
        cpu += time.process_time() - t0
        rows = expected[name]
        for t in (fams[rows[0]["mta_family"]], total, unseen if name in held else seen):
            judge(rows, items, t, log if t is total else [], name)
    print(f"{'family':<24}" + "".join(f"{m:>15}" for m in MEASURES))
    for fam in sorted(fams):
        print(f"{fam:<24}" + "".join(f"{fams[fam].cell(m):>15}" for m in MEASURES))
    print()
    for label, t in (("all", total), ("developed on", seen), ("held out", unseen)):
        print(f"{label:<24}" + "".join(f"{t.cell(m):>15}" for m in MEASURES))
    print(
        f"\n{len(names)} emails, {1000 * cpu / len(names):.2f} ms CPU per email (read + interpret)"
    )
    if a.verbose:
        print("\n".join(log))


if __name__ == "__main__":
    main()
