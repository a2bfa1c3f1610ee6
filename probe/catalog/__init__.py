"""The reply catalog: basic codes, enhanced codes and provider rules, loaded from package data.

Structure comes from `data/*.toml`; every human text from `locales/<lang>/*.toml` (see
`texts`). Each file is read when first needed, once per process (see `files`), and each rule
built when first a candidate: a bare code needs neither the enhanced registry nor the index
of rule needles, and a short command shows one language.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, NamedTuple

from probe.catalog.files import CatalogError, load_toml
from probe.catalog.needles import finder as _make_finder
from probe.catalog.needles import needles_for
from probe.catalog.texts import LANGUAGES, SECTIONS, Locale, locale
from probe.model import ACTORS, CATEGORIES, COMMANDS

__all__ = [
    "LANGUAGES",
    "MATCH_LIMIT",
    "SECTIONS",
    "BasicEntry",
    "Catalog",
    "CatalogError",
    "EnhancedEntry",
    "Locale",
    "Rule",
    "load",
    "locale",
    "needles_for",
]


# Entries are NamedTuples: as immutable and comparable as frozen dataclasses, and five times
# cheaper to define (a frozen dataclass of 13 fields takes over a millisecond at import).


class BasicEntry(NamedTuple):
    """A basic reply code (data/basic.toml)."""

    code: int
    standard: bool
    category: str
    retryable: bool
    wait: int
    actor: str
    commands: tuple[str, ...]
    refs: tuple[str, ...]


class EnhancedEntry(NamedTuple):
    """A code of the enhanced status code registry (data/enhanced.toml), without its class."""

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


# Characters of a reply's text that rules are matched against: every provider text the
# catalog knows sits in the first few hundred (replies are at most 512 octets a line, RFC 5321
# §4.5.3.1.5). The cap bounds the work a hostile reply of 32 KB can cause, on top of every
# pattern being linear (tests/test_linear.py).
MATCH_LIMIT = 4096


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


class Rule(NamedTuple):
    """A provider or MTA rule (data/rules.toml)."""

    id: str
    provider: str
    source: str
    pattern: str  # a regular expression, matched ignoring case
    codes: frozenset[int]
    classes: frozenset[int]
    enhanced: tuple[str, ...]
    commands: frozenset[str]
    category: str
    retryable: bool | None
    wait: int
    actor: str
    needles: tuple[str, ...] = ()  # one of these occurs in any text the pattern matches

    @property
    def text(self) -> re.Pattern[str]:
        """The compiled pattern; compiled when first used (most rules never are in one run)."""
        try:
            return _compiled(self.pattern)
        except re.error as exc:
            raise CatalogError(f"rule {self.id}: bad pattern: {exc}") from exc

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
        text = text[:MATCH_LIMIT]
        if self.needles:
            low = text.lower() if lowered is None else lowered
            if not any(n in low for n in self.needles):
                return False
        return self.text.search(text) is not None


def _check(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise CatalogError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


@cache
def _basic() -> dict[int, BasicEntry]:
    basic: dict[int, BasicEntry] = {}
    for key, e in load_toml("data", "basic.toml").items():
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
    return basic


@cache
def _enhanced() -> tuple[dict[str, EnhancedEntry], frozenset[int], frozenset[int]]:
    """The registry's codes, classes and subjects."""
    raw = load_toml("data", "enhanced.toml")
    enhanced: dict[str, EnhancedEntry] = {}
    for key, e in raw.get("code", {}).items():
        where = f"enhanced.{key}"
        enhanced[key] = EnhancedEntry(
            key=key,
            associated=tuple(str(a) for a in e["associated"]),
            refs=tuple(e["refs"]),
            category=_check(e["category"], CATEGORIES, where),
            deprecated=bool(e.get("deprecated", False)),
            classes=tuple(int(c) for c in e.get("classes", ())),
        )
    classes = frozenset(int(k) for k in raw.get("class", {}))
    subjects = frozenset(int(k) for k in raw.get("subject", {}))
    return enhanced, classes, subjects


@cache
def _raw_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = load_toml("data", "rules.toml").get("rule", [])
    return rules


@cache
def _needles() -> tuple[tuple[str, ...], ...]:
    """The needles of every rule, by index: what the prefilter needs, without the rules."""
    return tuple(needles_for(e["text"]) for e in _raw_rules())


@cache
def _rule(i: int) -> Rule:
    """Rule `i`, built when first a candidate: a reply is tried against a dozen of them."""
    e = _raw_rules()[i]
    where = f"rule {e.get('id')}"
    retry = e.get("retryable")
    return Rule(
        id=e["id"],
        provider=e["provider"],
        source=e["source"],
        pattern=e["text"],
        codes=frozenset(int(c) for c in e.get("codes", ())),
        classes=frozenset(int(c) for c in e.get("classes", ())),
        enhanced=tuple(e.get("enhanced", ())),
        commands=frozenset(_check(c, COMMANDS, where) for c in e.get("commands", ())),
        category=_check(e["category"], CATEGORIES, where),
        retryable=None if retry is None else bool(retry),
        wait=int(e.get("wait", 0)),
        actor=_check(e.get("actor", "sender"), ACTORS, where),
        needles=_needles()[i],
    )


@cache
def _rules() -> tuple[Rule, ...]:
    return tuple(_rule(i) for i in range(len(_raw_rules())))


@cache
def _unfiltered() -> frozenset[int]:
    return frozenset(i for i, n in enumerate(_needles()) if not n)


@cache
def _finder() -> Any:
    return _make_finder(_needles())


class Catalog:
    """The structural catalog. Each part is read from the package when first asked for."""

    __slots__ = ()

    @property
    def basic(self) -> dict[int, BasicEntry]:
        return _basic()

    @property
    def enhanced(self) -> dict[str, EnhancedEntry]:
        return _enhanced()[0]

    @property
    def classes(self) -> frozenset[int]:
        return _enhanced()[1]

    @property
    def subjects(self) -> frozenset[int]:
        return _enhanced()[2]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return _rules()

    @property
    def unfiltered(self) -> frozenset[int]:
        """Rules with no needle: always candidates."""
        return _unfiltered()

    @property
    def finder(self) -> Any:
        """Aho-Corasick over every needle: one pass over a text finds them all."""
        return _finder()

    def candidates(self, lowered: str) -> list[Rule]:
        """Rules that may match a text (lower-cased), in catalog order.

        One scan of the text instead of a test per rule: a log has thousands of refusals to
        explain, and most rules need a word that the text does not contain.
        """
        found = set(_unfiltered())
        # No needle is empty: a bare code ("550") finds none, and needs no index built.
        finder = _finder() if lowered else None
        if finder is not None:
            for _end, ix in finder.iter(lowered):
                found.update(ix)
        return list(map(_rule, sorted(found)))


@cache
def load() -> Catalog:
    """The structural catalog (one for the process; its parts are parsed when first used)."""
    return Catalog()
