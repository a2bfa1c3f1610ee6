"""The shipped catalog: complete, consistent, and fully translated."""

from __future__ import annotations

import csv
import json
import re
import string
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from probe import catalog
from probe.catalog import LANGUAGES, SECTIONS
from probe.model import CATEGORIES
from tests.conftest import FIXTURES

RFC5321 = {
    211,
    214,
    220,
    221,
    250,
    251,
    252,
    354,
    421,
    450,
    451,
    452,
    455,
    500,
    501,
    502,
    503,
    504,
    550,
    551,
    552,
    553,
    554,
    555,
}
EXTENSIONS = {
    235,
    334,
    432,
    454,
    530,
    534,
    535,
    538,
    521,
    556,
    253,
    458,
    459,
    453,
    523,
    524,
    525,
    422,
    430,
    533,
}
SUBJECT_DETAILS = {0: 0, 1: 10, 2: 4, 3: 6, 4: 7, 5: 6, 6: 10, 7: 30}
PROVIDERS = [
    "Gmail",
    "Microsoft",
    "Yahoo",
    "iCloud",
    "Proofpoint",
    "Mimecast",
    "Spamhaus",
    "Postfix",
    "Exim",
    "Sendmail",
    "qmail",
    "Courier",
    "postgrey",
    "rspamd",
]
TEXT_FIELDS = {
    "basic": ("name", "description", "when", "fix"),
    "enhanced": ("title", "description", "fix"),
    "rules": ("description", "when", "fix"),
}


def raw(*parts: str) -> dict[str, Any]:
    with resources.files("probe.catalog").joinpath(*parts).open("rb") as f:
        return tomllib.load(f)


def test_every_standard_basic_code() -> None:
    cat = catalog.load()
    standard = {c for c, e in cat.basic.items() if e.standard}
    assert standard == RFC5321 | EXTENSIONS
    assert len(standard) == 44
    nonstandard = {c for c, e in cat.basic.items() if not e.standard}
    assert len(nonstandard) >= 17
    assert {511, 571, 541, 420} <= nonstandard


def test_basic_entries_are_sound() -> None:
    for code, e in catalog.load().basic.items():
        assert 200 <= code <= 599
        if code // 100 in (2, 3):
            assert e.category == "success" and not e.retryable, code
        assert e.commands and e.refs, code
        if not e.retryable:
            assert e.wait == 0, code


def test_enhanced_registry_is_complete() -> None:
    cat = catalog.load()
    assert cat.classes == {2, 4, 5}
    assert cat.subjects == set(range(8))
    expected = {f"{s}.{d}" for s, n in SUBJECT_DETAILS.items() for d in range(n + 1)}
    assert set(cat.enhanced) == expected
    assert len(cat.enhanced) == 81
    assert [k for k, e in cat.enhanced.items() if e.deprecated] == ["6.10"]
    for key, e in cat.enhanced.items():
        assert e.refs, key
        assert all(c in (2, 4, 5) for c in e.classes), key


def test_rules_cover_the_providers() -> None:
    rules = catalog.load().rules
    assert len(rules) >= 80
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    names = " ".join(r.provider for r in rules)
    for p in PROVIDERS:
        assert p.lower() in names.lower(), p
    for r in rules:
        assert r.source and r.text.pattern, r.id
        assert r.category in CATEGORIES


def test_provider_meaning_wins_only_with_provider_text() -> None:
    from probe.interpret import explain
    from probe.model import Interpretation

    gmail = explain(
        "421 4.7.29 Your email has been rate limited because it was not sent over TLS - gsmtp"
    )
    plain = explain("550 5.7.29 ARC validation failure")
    assert isinstance(gmail, Interpretation) and isinstance(plain, Interpretation)
    assert gmail.category == "tls_required" and gmail.rule.kind == "rule"
    assert plain.category != "tls_required"
    ms = explain(
        "550 5.2.2 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; "
        "Failed to process message due to a permanent exception"
    )
    full = explain("552 5.2.2 Mailbox full")
    assert isinstance(ms, Interpretation) and isinstance(full, Interpretation)
    assert ms.category == "rate_limited"
    assert full.category == "mailbox_full"


def test_every_rule_has_a_fixture() -> None:
    with (FIXTURES / "replies.tsv").open(encoding="utf-8", newline="") as f:
        named = {r["rule"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    missing = [r.id for r in catalog.load().rules if r.id not in named]
    assert not missing, f"rules without a fixture line: {missing}"


def _placeholders(s: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(s) if f}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("section", SECTIONS)
def test_every_locale_has_every_entry_and_field(lang: str, section: str) -> None:
    en = _flatten(raw("locales", "en", f"{section}.toml"))
    other = _flatten(raw("locales", lang, f"{section}.toml"))
    assert set(other) == set(en), set(en) ^ set(other)
    for key, text in other.items():
        assert isinstance(text, str) and text.strip(), (lang, key)
        assert _placeholders(text) == _placeholders(en[key]), (lang, key)
        if (
            lang != "en"
            and key.rsplit(".", 1)[-1] in ("description", "fix", "when")
            and len(en[key]) > 40
        ):
            assert text != en[key], f"{lang} {key} is not translated"


@pytest.mark.parametrize("section", ["basic", "enhanced", "rules"])
def test_locale_keys_match_the_data(section: str) -> None:
    data = raw("data", f"{section}.toml")
    texts = raw("locales", "en", f"{section}.toml")
    if section == "rules":
        ids = {r["id"] for r in data["rule"]}
        assert set(texts) == ids
    elif section == "basic":
        assert set(texts) == set(data)
    else:
        for part in ("class", "subject", "code"):
            assert set(texts[part]) == set(data[part]), part
    for key in _flatten(texts):
        field = key.rsplit(".", 1)[-1]
        assert field in {f for fs in TEXT_FIELDS.values() for f in fs} | {"title"}, key
    for key, entry in texts.items() if section != "enhanced" else texts["code"].items():
        for field in TEXT_FIELDS[section]:
            assert entry.get(field), (section, key, field)


def test_translated_text_is_in_its_script() -> None:
    han = re.compile(r"[\u4e00-\u9fff]")
    hangul = re.compile(r"[\uac00-\ud7af]")
    for section in ("basic", "rules"):
        zh = _flatten(raw("locales", "zh", f"{section}.toml"))
        ko = _flatten(raw("locales", "ko", f"{section}.toml"))
        assert sum(bool(han.search(v)) for v in zh.values()) > 0.9 * len(zh)
        assert sum(bool(hangul.search(v)) for v in ko.values()) > 0.9 * len(ko)


def test_rule_prefilter_never_hides_a_match() -> None:
    """Each rule's needles occur in every text its pattern matches (fixtures and corpus-like)."""
    texts = []
    with (FIXTURES / "replies.tsv").open(encoding="utf-8") as f:
        texts += [line.split("\t", 1)[0] for line in f]
    from probe.reply import parse

    replies = [r.text for r in map(parse, texts) if r is not None]
    checked = 0
    for rule in catalog.load().rules:
        for text in replies:
            if rule.text.search(text):
                checked += 1
                assert not rule.needles or any(n in text.lower() for n in rule.needles), (
                    rule.id,
                    text,
                )
    assert checked >= len(catalog.load().rules)


def test_candidate_index_decides_as_a_scan_of_every_rule() -> None:
    """The needle index picks the same first matching rule as trying all rules in order."""
    from probe.reply import parse

    lines = [
        line.split("\t", 1)[0]
        for line in (FIXTURES / "replies.tsv").read_text(encoding="utf-8").splitlines()
    ]
    cat = catalog.load()
    decided = 0
    for reply in filter(None, map(parse, lines)):
        if reply.code is None:
            continue
        klass = reply.code // 100
        enh = str(reply.enhanced) if reply.enhanced else None
        args = (reply.code, klass, enh, reply.command, reply.text, reply.text.lower())
        every = next((r.id for r in cat.rules if r.matches(*args)), None)
        indexed = next((r.id for r in cat.candidates(reply.text.lower()) if r.matches(*args)), None)
        assert indexed == every, reply.text
        decided += every is not None
    assert decided >= len(cat.rules) // 2  # the fixtures exercise the rules, not only misses


@pytest.mark.parametrize(
    ("pattern", "needles"),
    [
        (r"receiving (?:e-?mail|mail) too quickly", (" too quickly",)),
        (r"e-?mail|greylisted", ("mail", "greylisted")),
        (r"\[TS[S]?0[1-8]\]|unexpected volume", ()),
        (r"\.\.\. User unknown", ("... user unknown",)),
        (r"exceeded \d+ hops", ("exceeded ",)),
        (r"SPF|DKIM", ()),
    ],
)
def test_needles(pattern: str, needles: tuple[str, ...]) -> None:
    assert catalog.needles_for(pattern) == needles


def test_a_pattern_up_to_the_limit_has_needles_and_a_longer_one_none() -> None:
    from probe.catalog.needles import NEEDLES_UP_TO

    tail = "(?:a|b)needle"
    fits = "x?" * ((NEEDLES_UP_TO - len(tail)) // 2) + tail
    assert len(fits) <= NEEDLES_UP_TO
    assert catalog.needles_for(fits) == ("needle",)
    # One longer is tried on every text (no needle), not scanned.
    assert catalog.needles_for("x?" + fits) == ()


def test_no_rule_targets_positive_replies() -> None:
    """The interpreter skips rules for 2xx/3xx replies; that is only safe while none applies."""
    for r in catalog.load().rules:
        assert not (r.classes & {2, 3}), r.id
        assert all(c >= 400 for c in r.codes), r.id
        assert all(e[0] in "45X" for e in r.enhanced), r.id


def test_every_rule_reads_text() -> None:
    """The interpreter tries no rule on a reply without text; that is only safe while every
    pattern needs at least a character."""
    for r in catalog.load().rules:
        assert r.text.search("") is None, r.id


CATALOG_DIR = Path(catalog.__file__).parent
TOML_FILES = sorted(
    p.relative_to(CATALOG_DIR).parts
    for p in CATALOG_DIR.glob("*/**/*.toml")
    if p.relative_to(CATALOG_DIR).parts[0] != "parsed"
)


def test_parsed_copies_are_current() -> None:
    """Every TOML file has its parsed copy, made from its current bytes."""
    from probe.catalog.files import copy_path, parsed_copy

    assert len(TOML_FILES) == 3 + len(LANGUAGES) * len(SECTIONS)
    stale = []
    for parts in TOML_FILES:
        copy = CATALOG_DIR.joinpath(*copy_path(*parts))
        want = parsed_copy(parts, CATALOG_DIR.joinpath(*parts).read_bytes())
        if not copy.exists() or copy.read_text(encoding="utf-8") != want:
            stale.append("/".join(parts))
    assert not stale, f"run `python -m probe.catalog` and commit: {stale}"
    copies = {p.relative_to(CATALOG_DIR).parts for p in (CATALOG_DIR / "parsed").rglob("*")}
    made = {copy_path(*parts) for parts in TOML_FILES}
    assert {c for c in copies if c[-1].endswith(".json")} == made


@pytest.mark.parametrize("parts", TOML_FILES, ids="/".join)
def test_catalog_files_read_as_tomllib_parses_them(parts: tuple[str, ...]) -> None:
    from probe.catalog.files import load_toml

    got = load_toml(*parts)
    want = raw(*parts)
    # Same values, types, and order of keys.
    assert json.dumps(got, ensure_ascii=False) == json.dumps(want, ensure_ascii=False)


def test_a_toml_file_edited_since_its_copy_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.catalog import files

    read = files._read

    def edited(path: str) -> bytes:
        data = read(path)
        return data + b'\n[added_since]\ntext = "new"\n' if path.endswith("ui.toml") else data

    monkeypatch.setattr(files, "_read", edited)
    assert files.load_toml("locales", "en", "ui.toml")["added_since"] == {"text": "new"}
    assert files.load_toml("locales", "en", "basic.toml") == raw("locales", "en", "basic.toml")
