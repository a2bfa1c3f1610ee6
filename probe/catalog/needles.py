"""Needles: literals that a rule's pattern cannot match without, found in one pass over a text.

Checking them before running the regular expressions makes a log of a million lines several
times faster: most rules are rejected without entering the regex engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

_SPECIAL = set("()[]{}?*+^$.|\\")
# Needles only spare the regex engine work: a rule without any is tried on every text. A
# pattern longer than this is no rule of ours (the longest is a few hundred characters), and
# is tried that way rather than scanned character by character here.
NEEDLES_UP_TO = 4096


@cache
def _runs() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Runs of characters that the scans below pass over in one step instead of one by one."""
    return (
        re.compile(r"[^()\[\]{}?*+^$.|\\]+"),  # plain characters: part of a literal
        re.compile(r"[^()\\]+"),  # inside a group: anything but brackets and escapes
        re.compile(r"[^\\\[()|]+"),  # nothing that can start a branch, class or group
    )


def _top_branches(pattern: str) -> list[str] | None:
    """Split a pattern at its top-level "|"; None if that cannot be done safely."""
    if "|" not in pattern and "[" not in pattern:
        return [pattern]  # most patterns: nothing to split, no class to check
    skip = _runs()[2].match
    out: list[str] = []
    depth, start, i, n = 0, 0, 0, len(pattern)
    while i < n:
        if m := skip(pattern, i):
            i = m.end()
            continue
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                return None
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return out


def _longest_literal(branch: str) -> str:
    """The longest run of plain characters, outside groups, that every match contains."""
    # Runs of plain characters, and the insides of groups, are passed over by a regex match:
    # this runs over every rule's pattern when the rules are loaded.
    plain, in_group, _ = _runs()
    best, run, depth, i, n = "", "", 0, 0, len(branch)
    while i < n:
        if depth:
            if m := in_group.match(branch, i):
                i = m.end()
                continue
            c = branch[i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            i += 2 if c == "\\" else 1
            continue
        c = branch[i]
        if c in "?*{" or (c == "+" and run):
            run = run[:-1]  # the character before a quantifier may be absent or repeated
            if len(run) > len(best):
                best = run
            run = ""
        elif c == "\\":
            nxt = branch[i + 1 : i + 2]
            if nxt and not nxt.isalnum():
                run += nxt
            else:
                if len(run) > len(best):
                    best = run
                run = ""
            i += 2
            continue
        elif c in _SPECIAL:
            if len(run) > len(best):
                best = run
            run = ""
            if c == "(":
                depth = 1
            elif c == "[":
                end = branch.find("]", i + 2)
                i = (end if end > 0 else n) + 1
                continue
        else:
            m = plain.match(branch, i)
            assert m is not None  # c is plain
            run += m.group()
            i = m.end()
            continue
        i += 1
    return run if len(run) > len(best) else best


def needles_for(pattern: str) -> tuple[str, ...]:
    """Literals of which one must occur for `pattern` to match; empty when none is certain
    (or the pattern is longer than `NEEDLES_UP_TO`)."""
    if len(pattern) > NEEDLES_UP_TO:
        return ()
    branches = _top_branches(pattern)
    if branches is None:
        return ()
    out = []
    for b in branches:
        lit = _longest_literal(b).lower()
        if len(lit) < 4 or not lit.isascii():
            return ()
        out.append(lit)
    return tuple(out)


def finder(needles: Iterable[tuple[str, ...]]) -> Any:
    """Aho-Corasick over the needles of every rule: each needle gives the rules that need it.

    One pass over a text finds them all, overlaps included. None when no rule has a needle.
    """
    import ahocorasick  # here: only a reply with text needs it

    index: dict[str, list[int]] = {}
    for i, rule_needles in enumerate(needles):
        for needle in rule_needles:
            index.setdefault(needle, []).append(i)
    if not index:
        return None
    automaton = ahocorasick.Automaton()
    for needle, ix in index.items():
        automaton.add_word(needle, tuple(ix))
    automaton.make_automaton()
    return automaton
