"""The reply catalog: basic codes, enhanced codes and provider rules, loaded from package data.

Structure comes from `data/*.toml`; every human text from `locales/<lang>/*.toml`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import ahocorasick

from probe.model import ACTORS, CATEGORIES, COMMANDS

LANGUAGES: tuple[str, ...] = ("en", "zh", "de", "ko")
SECTIONS: tuple[str, ...] = ("ui", "basic", "enhanced", "rules", "findings")


class CatalogError(Exception):
    """The shipped catalog data is inconsistent (a packaging bug, caught by the tests)."""


@dataclass(frozen=True, slots=True)
class BasicEntry:
    code: int
    standard: bool
    category: str
    retryable: bool
    wait: int
    actor: str
    commands: tuple[str, ...]
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EnhancedEntry:
    key: str
    associated: tuple[str, ...]
    refs: tuple[str, ...]
    category: str
    deprecated: bool
    classes: tuple[int, ...]

    def associates(self, code: int) -> bool | None:
        """Whether the registry lists `code` for this entry; None when it lists nothing usable."""
        if not self.associated or any(a.lower() in ("any", ".", "-") for a in self.associated):
            return None
        for a in self.associated:
            a = a.strip().upper()
            if a == str(code) or (a.endswith("XX") and a[0] == str(code)[0]):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    provider: str
    source: str
    text: re.Pattern[str]
    codes: frozenset[int]
    classes: frozenset[int]
    enhanced: tuple[str, ...]
    commands: frozenset[str]
    category: str
    retryable: bool | None
    wait: int
    actor: str
    needles: tuple[str, ...] = ()  # one of these occurs in any text the pattern matches

    def matches(
        self,
        code: int | None,
        klass: int,
        enhanced: str | None,
        command: str | None,
        text: str,
        lowered: str | None = None,
    ) -> bool:
        if self.codes and code not in self.codes:
            return False
        if self.classes and klass not in self.classes:
            return False
        if self.enhanced:
            if enhanced is None:
                return False
            wild = "X" + enhanced[1:]
            if enhanced not in self.enhanced and wild not in self.enhanced:
                return False
        if self.commands and command is not None and command not in self.commands:
            return False
        if self.needles:
            low = text.lower() if lowered is None else lowered
            if not any(n in low for n in self.needles):
                return False
        return self.text.search(text) is not None


_SPECIAL = set("()[]{}?*+^$.|\\")


def _top_branches(pattern: str) -> list[str] | None:
    """Split a pattern at its top-level "|"; None if that cannot be done safely."""
    out: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(pattern):
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
    best, run, depth, i = "", "", 0, 0
    while i < len(branch):
        c = branch[i]
        if depth:
            depth += {"(": 1, ")": -1}.get(c, 0)
            i += 2 if c == "\\" else 1
            continue
        if c in "?*{" or (c == "+" and run):
            run = run[:-1]  # the character before a quantifier may be absent or repeated
            best, run = max(best, run, key=len), ""
        elif c == "\\":
            nxt = branch[i + 1 : i + 2]
            if nxt and not nxt.isalnum():
                run += nxt
            else:
                best, run = max(best, run, key=len), ""
            i += 2
            continue
        elif c in _SPECIAL:
            best, run = max(best, run, key=len), ""
            if c == "(":
                depth = 1
            elif c == "[":
                end = branch.find("]", i + 2)
                i = (end if end > 0 else len(branch)) + 1
                continue
        else:
            run += c
        i += 1
    return max(best, run, key=len)


def needles_for(pattern: str) -> tuple[str, ...]:
    """Literals of which one must occur for `pattern` to match; empty when none is certain.

    Checking them with `in` before running the regular expression makes a log of a million
    lines several times faster: most rules are rejected without entering the regex engine.
    """
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


@dataclass(frozen=True, slots=True)
class Catalog:
    basic: dict[int, BasicEntry]
    enhanced: dict[str, EnhancedEntry]
    classes: frozenset[int]
    subjects: frozenset[int]
    rules: tuple[Rule, ...]
    # rules with no needle are always candidates
    unfiltered: frozenset[int] = frozenset()
    # Aho-Corasick over every needle: one pass over the text finds them all, overlaps included.
    finder: Any = field(default=None, compare=False, repr=False)

    def candidates(self, lowered: str) -> list[Rule]:
        """Rules that may match a text (lower-cased), in catalog order.

        One scan of the text instead of a test per rule: a log has thousands of refusals to
        explain, and most rules need a word that the text does not contain.
        """
        found = set(self.unfiltered)
        if self.finder is not None:
            for _end, rules in self.finder.iter(lowered):
                found.update(rules)
        return [self.rules[i] for i in sorted(found)]


def _load_toml(*parts: str) -> dict[str, Any]:
    path = resources.files("probe.catalog").joinpath(*parts)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CatalogError(f"cannot read catalog file {'/'.join(parts)}: {e}") from e


def _check(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise CatalogError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


@cache
def load() -> Catalog:
    """Load and validate the structural catalog (cached for the process)."""
    raw_basic = _load_toml("data", "basic.toml")
    basic: dict[int, BasicEntry] = {}
    for key, e in raw_basic.items():
        where = f"basic.{key}"
        basic[int(key)] = BasicEntry(
            code=int(key),
            standard=bool(e["standard"]),
            category=_check(e["category"], CATEGORIES, where),
            retryable=bool(e["retryable"]),
            wait=int(e["wait"]),
            actor=_check(e["actor"], ACTORS, where),
            commands=tuple(_check(c, COMMANDS, where) for c in e["commands"]),
            refs=tuple(e["refs"]),
        )
    raw_enh = _load_toml("data", "enhanced.toml")
    enhanced: dict[str, EnhancedEntry] = {}
    for key, e in raw_enh.get("code", {}).items():
        where = f"enhanced.{key}"
        enhanced[key] = EnhancedEntry(
            key=key,
            associated=tuple(str(a) for a in e["associated"]),
            refs=tuple(e["refs"]),
            category=_check(e["category"], CATEGORIES, where),
            deprecated=bool(e.get("deprecated", False)),
            classes=tuple(int(c) for c in e.get("classes", ())),
        )
    rules: list[Rule] = []
    for e in _load_toml("data", "rules.toml").get("rule", []):
        where = f"rule {e.get('id')}"
        try:
            pattern = re.compile(e["text"], re.IGNORECASE)
        except re.error as exc:
            raise CatalogError(f"{where}: bad pattern: {exc}") from exc
        retry = e.get("retryable")
        rules.append(
            Rule(
                id=e["id"],
                provider=e["provider"],
                source=e["source"],
                text=pattern,
                codes=frozenset(int(c) for c in e.get("codes", ())),
                classes=frozenset(int(c) for c in e.get("classes", ())),
                enhanced=tuple(e.get("enhanced", ())),
                commands=frozenset(_check(c, COMMANDS, where) for c in e.get("commands", ())),
                category=_check(e["category"], CATEGORIES, where),
                retryable=None if retry is None else bool(retry),
                wait=int(e.get("wait", 0)),
                actor=_check(e.get("actor", "sender"), ACTORS, where),
                needles=needles_for(e["text"]),
            )
        )
    index: dict[str, list[int]] = {}
    for i, rule in enumerate(rules):
        for needle in rule.needles:
            index.setdefault(needle, []).append(i)
    finder = None
    if index:
        finder = ahocorasick.Automaton()
        for needle, ix in index.items():
            finder.add_word(needle, tuple(ix))
        finder.make_automaton()
    return Catalog(
        basic=basic,
        enhanced=enhanced,
        classes=frozenset(int(k) for k in raw_enh.get("class", {})),
        subjects=frozenset(int(k) for k in raw_enh.get("subject", {})),
        rules=tuple(rules),
        unfiltered=frozenset(i for i, r in enumerate(rules) if not r.needles),
        finder=finder,
    )


class Locale:
    """Texts of one language, with English behind it for anything missing."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self._data = {s: _load_toml("locales", self.lang, f"{s}.toml") for s in SECTIONS}
        self._fallback: Locale | None = None if self.lang == "en" else locale("en")

    def section(self, name: str) -> dict[str, Any]:
        return self._data[name]

    def entry(self, section: str, key: str) -> dict[str, Any] | None:
        """The texts of one entry: a basic code, an enhanced key ("1.1"), or a rule id."""
        data = self._data[section]
        if section == "enhanced":
            data = data.get("code", {})
        found = data.get(key)
        if found is None and self._fallback is not None:
            return self._fallback.entry(section, key)
        return found

    def field(self, section: str, key: str, name: str) -> str | None:
        e = self.entry(section, key)
        if e is None:
            return None
        value = e.get(name)
        if value is None and self._fallback is not None:
            return self._fallback.field(section, key, name)
        return value if isinstance(value, str) else None

    def ui(self, path: str, **kwargs: object) -> str:
        """A UI string by dotted path ("heading.fix"), formatted with kwargs."""
        node: Any = self._data["ui"]
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, str):
            if self._fallback is not None:
                return self._fallback.ui(path, **kwargs)
            return path
        return node.format(**kwargs) if kwargs else node

    def enhanced_part(self, part: str, key: str, name: str) -> str:
        """Title or description of an enhanced class ("class", "2") or subject ("subject", "1")."""
        node = self._data["enhanced"].get(part, {}).get(key, {})
        value = node.get(name)
        if not isinstance(value, str):
            return self._fallback.enhanced_part(part, key, name) if self._fallback else ""
        return value


@cache
def locale(lang: str) -> Locale:
    return Locale(lang)
