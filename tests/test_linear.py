"""No pattern backtracks: every catalog rule, every pattern of the reply parser and of
`redact` takes time linear in its input (issue 13).

Each pattern is fed adversarial text made from its own pieces: each proper prefix of a string
it matches (a near miss), repeated, or followed by a long run of one character. A pattern
that reads the rest of the text again from every near miss takes seconds on these; a linear
one, milliseconds. Times are CPU times of this process (time.process_time), best of two.
"""

from __future__ import annotations

import json
import re
import re._constants as sre  # the parse tree of a pattern: its pieces, to build near misses
import re._parser as sre_parse
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import probe.bounce as bounce_mod
import probe.reply as reply_mod
from probe import catalog
from probe.catalog.needles import NEEDLES_UP_TO
from probe.cli import cli
from probe.interpret import interpret_reply
from probe.lab.dns import LoopThread
from probe.lab.smtp import port_of, start_raw
from probe.model import Reply
from probe.redact import _IPV4, _IPV6, Redactor
from probe.reply import iter_replies, parse, reply_from_lines
from tests.conftest import FIXTURES

BOUND = 0.050  # seconds: the bound issue 13 names
MB = 1024 * 1024
FILLERS = (" ", "a", "1", ".", "@", "a ", "1.", ":", "\t", "(")


def cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of one call, best of two (the first may pay for compiling the pattern)."""
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _one_of(items: list[Any]) -> str:
    """A character that a character class matches."""
    if any(op is sre.NEGATE for op, _ in items):
        taken = {chr(av) for op, av in items if op is sre.LITERAL}
        return next(c for c in "xa1 .:@" if c not in taken)
    op, av = items[0]
    if op is sre.LITERAL:
        return chr(av)
    if op is sre.RANGE:
        return chr(av[0])
    if op is sre.CATEGORY:
        named = {sre.CATEGORY_DIGIT: "1", sre.CATEGORY_SPACE: " ", sre.CATEGORY_NOT_WORD: " "}
        return named.get(av, "a")
    return "a"


def _sample(items: list[Any]) -> str:
    """A short string matching a sequence of parsed items (lookarounds and anchors ignored)."""
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
        elif op in (sre.ANY, sre.NOT_LITERAL):
            out.append("x" if (op is sre.ANY or chr(av) != "x") else "y")
        elif op is sre.IN:
            out.append(_one_of(av))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            out.append(_sample(list(av[2])) * max(av[0], 1))
        elif op is sre.SUBPATTERN:
            out.append(_sample(list(av[3])))
        elif op is sre.ATOMIC_GROUP:
            out.append(_sample(list(av)))
        elif op is sre.BRANCH:
            out.append(_sample(list(av[1][0])))
    return "".join(out)


def _sequences(items: list[Any]) -> Iterator[list[Any]]:
    """The pattern with each alternative of each alternation in its place, one at a time."""
    yield items
    for k, (op, av) in enumerate(items):
        inner = list(av[3]) if op is sre.SUBPATTERN else [(op, av)]
        if len(inner) == 1 and inner[0][0] is sre.BRANCH:
            for alt in inner[0][1][1]:
                yield from _sequences(items[:k] + list(alt) + items[k + 1 :])


REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def near_misses(pattern: str, flags: int = 0) -> list[str]:
    """Prefixes of a sample match of each alternative, where backtracking has a choice: up
    to and past each repeat, and all but the last piece."""
    out: list[str] = []
    for seq in _sequences(list(sre_parse.parse(pattern, flags))):
        cuts = {len(seq) - 1} | {
            k + d for k, (op, _) in enumerate(seq) if op in REPEATS for d in (0, 1)
        }
        for k in sorted(c for c in cuts if 0 < c < len(seq)):
            s = _sample(seq[:k])
            if s and s not in out:
                out.append(s)
    return out


def adversarial(pattern: str, size: int, flags: int = 0, fillers: bool = True) -> list[str]:
    """Texts of `size` characters that make a backtracking pattern slow."""
    texts = [f * (size // len(f)) for f in FILLERS] if fillers else []
    misses = near_misses(pattern, flags)
    for miss in misses:
        texts.append(miss * (size // len(miss)))
        texts.append((miss + " ") * (size // (len(miss) + 1)))
    longest = max(misses, key=len, default="")
    texts += [longest + f * ((size - len(longest)) // len(f)) for f in (" ", "a", "1", "x@", ")")]
    return texts


def _args(rule: catalog.Rule) -> tuple[int, int, str | None, str | None]:
    """Codes that let the rule's text be tried (code, class, enhanced, command)."""
    klass = min(rule.classes) if rule.classes else 5
    code = min(rule.codes) if rule.codes else klass * 100 + 50
    enhanced = rule.enhanced[0].replace("X", str(code // 100)) if rule.enhanced else None
    return code, code // 100, enhanced, None


RULES = catalog.load().rules


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_every_rule_takes_a_megabyte_reply_within_50_ms(rule: catalog.Rule) -> None:
    """The way interpretations match rules: a whole 1 MB reply text handed to the rule."""
    code, klass, enhanced, command = _args(rule)
    slow = []
    for text in adversarial(rule.pattern, MB, re.IGNORECASE):
        took = cpu(lambda: rule.matches(code, klass, enhanced, command, text))  # noqa: B023
        if took > BOUND:
            slow.append((round(took * 1000), text[:40]))
    assert not slow, slow


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_every_rule_pattern_is_linear_past_the_cap(rule: catalog.Rule) -> None:
    """The pattern itself, on 64 KB (16 times what is matched): no quadratic reading."""
    slow = []
    for text in adversarial(rule.pattern, 64 * 1024, re.IGNORECASE, fillers=False):
        took = cpu(lambda: rule.text.search(text))  # noqa: B023
        if took > BOUND:
            slow.append((round(took * 1000), text[:40]))
    assert not slow, slow


# How probe.reply uses each of its patterns that it does not search: anchored at the start.
ANCHORED = {
    "_BARE_CODE": ("fullmatch",),
    "_BARE_ENH": ("fullmatch",),
    "_LINE": ("match", "fullmatch"),
    "_LEAD_ENH": ("match",),
    "_SWAKS": ("match",),
    "_SWAKS_CMD": ("match",),
    "_SWAKS_CONNECT": ("match",),
    "_CONT": ("match",),
    "_LAST": ("match",),
    "_IN_REPLY_END": ("match",),
    "_EXIM_REST": ("match",),
}
PARSER = {n: p for n, p in vars(reply_mod).items() if isinstance(p, re.Pattern)}


def test_the_table_knows_how_each_parser_pattern_is_used() -> None:
    import inspect

    source = inspect.getsource(reply_mod)
    for name in PARSER:
        used = set(re.findall(rf"{name}\.(search|match|fullmatch|sub|subn)\(", source))
        assert used, name
        assert used <= set(ANCHORED.get(name, ("search",))), (name, used)


@pytest.mark.parametrize("name", sorted(PARSER))
def test_every_parser_pattern_is_linear(name: str) -> None:
    """64 KB of spaces and the pattern's own near misses, as it is used, within 50 ms."""
    pattern = PARSER[name]
    slow = []
    for method in ANCHORED.get(name, ("search",)):
        use = getattr(pattern, method)
        for text in adversarial(pattern.pattern, 64 * 1024, pattern.flags):
            took = cpu(lambda: use(text))  # noqa: B023
            if took > BOUND:
                slow.append((method, round(took * 1000), text[:40]))
    assert not slow, slow


def test_the_wire_reads_a_reply_in_linear_time() -> None:
    """parse_reply's one-pass pattern, on 64 KB of its near misses (as the wire takes them:
    latin-1 bytes), within the bound."""
    from probe.wire import _WHOLE, parse_reply

    pattern = _WHOLE.pattern.decode("latin-1")
    texts = [t.encode("latin-1") for t in adversarial(pattern, 64 * 1024)]
    texts += [b"250-" * 16384, b"250-\n" * 16384, b"250-x\r" * 10922]
    slow = []
    for data in texts:
        took = cpu(lambda: _WHOLE.match(data))  # noqa: B023
        if took > BOUND:
            slow.append((round(took * 1000), data[:40]))
    assert not slow, slow
    assert parse_reply(b"250-x\n" * 3 + b"250 y\n") is not None


# What --redact scans for besides its two patterns: addresses around each "@" and the user's
# own domain, found by plain searches.
_ADDRESSY = r"[a-z0-9.+-]{1,64}@(?:[a-z0-9-]{1,63}\.){1,4}example\.org"


def _redact_inputs(pattern: str, size: int) -> list[str]:
    texts = [*adversarial(pattern, size, 0), "@" * size, "a@" * (size // 2), "a" * size + "@"]
    return [*texts, "example.org." * (size // 12), "0::0 " * (size // 5), "0:0: " * (size // 5)]


@pytest.mark.parametrize("pattern", [_IPV4.pattern, _IPV6.pattern, _ADDRESSY])
def test_redact_is_linear(pattern: str) -> None:
    """--redact (probe.redact.Redactor, one per output) on each pattern's near misses and on
    runs of "@", dots and the user's own domain: four times the text costs about four times
    the time (a quadratic scan would cost sixteen). Not a regex of the catalog or the parser,
    it does Python work per address found, so the bound is on growth, not 50 ms."""
    slow = []
    pairs = zip(_redact_inputs(pattern, 16 * 1024), _redact_inputs(pattern, 64 * 1024), strict=True)
    for small, big in pairs:
        t_small = min(cpu(lambda: Redactor(["example.org"]).text(small)) for _ in range(3))  # noqa: B023
        t_big = min(cpu(lambda: Redactor(["example.org"]).text(big)) for _ in range(3))  # noqa: B023
        if t_big > 0.005 and t_big > 8 * max(t_small, 0.001):
            slow.append((round(t_small * 1000), round(t_big * 1000), big[:40]))
    assert not slow, slow


# The reply that took 19 s of CPU before issue 13 (a Yahoo rule read ".* ... .*" from every
# "delivery error: dd"): each near miss of that rule, over and over.
HOSTILE = "delivery error: dd xdoesn't have a "


def as_reply_lines(text: str, code: int = 550, width: int = 7900) -> list[str]:
    """`text` as the lines of one multi-line reply, each within the wire's 8 KB a line."""
    parts = [text[i : i + width] for i in range(0, len(text), width)]
    return [f"{code}{'-' if i < len(parts) - 1 else ' '}{p}" for i, p in enumerate(parts)]


def test_parse_and_the_stream_are_linear_in_a_line() -> None:
    lines = [f * (MB // len(f)) for f in FILLERS]
    lines += [m * (64 * 1024 // len(m)) for m in ("said: ", "550-5.1.1 ", "(#5.1.1", "550 ")]
    lines += ["host x said: 550 " + "(in reply to " * 5000, "NOQUEUE: reject: RCPT from x: 550 "]
    for line in lines:
        assert cpu(lambda: parse(line)) < BOUND, line[:40]  # noqa: B023
        assert cpu(lambda: list(iter_replies([line, line]))) < 2 * BOUND, line[:40]  # noqa: B023


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_a_32_kb_reply_of_a_rules_near_misses_is_interpreted_within_50_ms(
    rule: catalog.Rule,
) -> None:
    """A whole reply as the wire takes it (32 KB in lines of 8 KB), every rule tried."""
    code = _args(rule)[0]
    for miss in near_misses(rule.pattern, re.IGNORECASE):
        r = reply_from_lines(as_reply_lines(miss * (32 * 1024 // len(miss)), code))
        assert r is not None and len(r.text) > 30_000
        assert cpu(lambda: interpret_reply(r)) < BOUND, miss  # noqa: B023


def test_reply_codes_are_ascii_digits() -> None:
    """\\d takes any Unicode digit, and int() reads them: "٥٥٠" would be 550."""
    for item in ("５５０ 5.1.1 no", "٥٥٠ no", "5٥0", "550 ٥.1.1 x", "Status: ٥.1.1", "dsn=5.١.1"):
        r = parse(item)
        assert r is None or (r.code is None and r.enhanced is None) or r.enhanced is None, item
    r = parse("550 ٥.1.1 x")
    assert r is not None and r.code == 550 and r.enhanced is None
    assert parse("５５０ 5.1.1 no") is None


def _replies_of(s: str) -> Reply | None:
    """What the forms after the quick test find, without it."""
    return reply_mod._embedded(s)


PIECES = [
    "550", "250", "421", "299", "5.1.1", "4.7.1", "2.0.0", " ", "-", ":", ";", "(", ")", "=",
    "#", "/", ".", "[", "]", "<", "~", "*", "x", "said:", "(in reply to ", " command)", "dsn=",
    "Status: ", "Diagnostic-Code: smtp; ", "SMTP error from remote mail server after ",
    "NOQUEUE: reject: RCPT from x[1.2.3.4]: ", "; from=<a@b>", "refused to talk to me: ",
    "reply=", "stat=Deferred: ", "(#", "host x [1.2.3.4]: ", "\n", "\t", "é", "ſ", "host-250-1",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=10).map("".join))
def test_the_quick_test_never_hides_a_reply(s: str) -> None:
    """Whatever the forms find in a line, the one scan that comes first finds a sign of."""
    s = s.strip()
    if s and _replies_of(s) is not None:
        assert reply_mod._MAYBE.search(s), s


def test_the_quick_test_passes_every_known_reply_line() -> None:
    import csv

    with (FIXTURES / "replies.tsv").open(encoding="utf-8", newline="") as f:
        rows = [r["input"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    for item in rows:
        s = item.strip()
        if _replies_of(s) is not None:
            assert reply_mod._MAYBE.search(s), item


# A batch: a quick target's timings are not inflated by another target's hostile reply.


async def _hostile(r: Any, w: Any) -> None:
    """Answers every command with a 32 KB reply made to be slow to interpret."""
    big = "".join(f"{x}\r\n" for x in as_reply_lines(HOSTILE * (32 * 1024 // len(HOSTILE))))
    w.write(b"220 hostile.test\r\n")
    await w.drain()
    while line := await r.readline():
        w.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else big.encode())
        await w.drain()


async def _quick(r: Any, w: Any) -> None:
    import asyncio

    # The greeting comes a little later: the session waits for it while the hostile reply
    # is being interpreted, so a blocked event loop shows in this session's timings.
    await asyncio.sleep(0.15)
    w.write(b"220 quick.test\r\n")
    await w.drain()
    while line := await r.readline():
        w.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")
        await w.drain()


def test_a_hostile_reply_does_not_stall_another_session_of_the_batch() -> None:
    lt = LoopThread()
    hostile, quick = lt.run(start_raw(_hostile)), lt.run(start_raw(_quick))
    try:
        targets = f"[127.0.0.1]:{port_of(hostile)}\n[127.0.0.1]:{port_of(quick)}\n"
        args = ["batch", "-", "--concurrency", "2", "--timeout", "30", "--helo", "b.test"]
        args += ["--starttls", "never", "--nameserver", "127.0.0.1:9"]
        r = CliRunner().invoke(cli, args, input=targets)
    finally:
        for srv in (hostile, quick):
            lt.loop.call_soon_threadsafe(srv.close)
        lt.close()
    records = {rec["line"]: rec for rec in map(json.loads, r.stdout.splitlines())}
    assert set(records) == {1, 2}, r.output[:2000]
    refused = [s["reply"] for s in records[1]["sessions"][0]["steps"] if s["reply"]]
    assert any(x["code"] == 550 and len("".join(x["lines"])) > 30_000 for x in refused)
    steps = records[2]["sessions"][0]["steps"]
    assert steps and all(s["reply"] for s in steps)
    # 150 ms of the greeting's wait is the server's own; the rest would be the other session's.
    slowest = max(s["elapsed_ms"] for s in steps)
    assert slowest < 750, steps


@pytest.mark.parametrize("size", [NEEDLES_UP_TO, 64 * 1024])
@pytest.mark.parametrize("unit", ["\\.", "a", "(a)", "a|", "[a]", "a*", "(?:x|y)", "\\b"])
def test_needles_of_a_long_pattern_are_found_in_linear_time(unit: str, size: int) -> None:
    """Rules are catalog data, not a peer's; still, reading their needles stays linear (up to
    the longest pattern that is scanned for them, and beyond)."""
    pattern = unit * (size // len(unit))
    assert cpu(lambda: catalog.needles_for(pattern)) < BOUND


# probe.bounce reads every line of an email with these; the words table is read the same way.
BOUNCE = {n: p for n, p in vars(bounce_mod).items() if isinstance(p, re.Pattern)} | {
    f"_WORDS[{i}]": p for i, (p, _) in enumerate(bounce_mod._WORDS)
}


@pytest.mark.parametrize("name", sorted(BOUNCE))
def test_every_bounce_pattern_is_linear(name: str) -> None:
    """64 KB of spaces and the pattern's own near misses, searched, within 50 ms."""
    pattern = BOUNCE[name]
    slow = []
    for text in adversarial(pattern.pattern, 64 * 1024, pattern.flags):
        took = cpu(lambda: pattern.search(text))  # noqa: B023
        if took > BOUND:
            slow.append((round(took * 1000), text[:40]))
    assert not slow, slow
