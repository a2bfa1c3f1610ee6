"""Every sentence in the user's language: message ids complete in every language, the main
commands in de, zh and ko free of English sentences, and CJK columns aligned by display width."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from probe.catalog import LANGUAGES, locale
from probe.catalog.files import load_toml
from probe.cli import cli
from probe.lab.dns import Behaviour, LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from probe.messages import from_json, message_json, msg, say
from probe.render import width, wrap_cells

FOREIGN = [lang for lang in LANGUAGES if lang != "en"]


def _templates(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_templates(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            out[prefix + key] = value
    return out


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@pytest.mark.parametrize("lang", FOREIGN)
@pytest.mark.parametrize("section", ["messages", "ui", "findings"])
def test_every_message_is_translated_with_the_same_parameters(lang: str, section: str) -> None:
    english = _templates(load_toml("locales", "en", f"{section}.toml"))
    theirs = _templates(load_toml("locales", lang, f"{section}.toml"))
    if section == "findings":  # a reference ("RFC 5321 §5.1") needs no translation
        english = {k: v for k, v in english.items() if not k.endswith(".ref")}
        theirs = {k: v for k, v in theirs.items() if not k.endswith(".ref")}
    assert sorted(set(english) - set(theirs)) == [], f"{lang}: untranslated"
    assert sorted(set(theirs) - set(english)) == [], f"{lang}: ids English does not have"
    for key, text in english.items():
        assert _fields(theirs[key]) == _fields(text), f"{lang} {section}.{key}"


def test_a_message_is_its_english_text_and_says_itself_again() -> None:
    inner = msg("wire.no_reply", seconds=2.5)
    outer = msg("verdict.unreachable", detail=inner)
    assert outer == "no server could be reached (no reply within 2.5 s)"
    assert say(locale("de"), outer) == (
        "kein Server war erreichbar (keine Antwort innerhalb von 2.5 s)"
    )
    doc = message_json(outer)
    assert doc == {
        "id": "verdict.unreachable",
        "params": {"detail": {"id": "wire.no_reply", "params": {"seconds": 2.5}}},
    }
    back = from_json(str(outer), json.loads(json.dumps(doc)))
    assert back == outer and say(locale("zh"), back) == say(locale("zh"), outer)
    assert message_json("550 server text") is None


# --- the language matrix ------------------------------------------------------------------

ZONE = """
ok.test. 60 IN MX 10 mx.ok.test.
mx.ok.test. 60 IN A 127.0.0.2
grey.test. 60 IN MX 10 mx.grey.test.
mx.grey.test. 60 IN A 127.0.0.3
mute.test. 60 IN MX 10 mx.mute.test.
mx.mute.test. 60 IN A 127.0.0.4
closed.test. 60 IN MX 10 mx.closed.test.
mx.closed.test. 60 IN A 127.0.0.6
broken.test. 60 IN MX 10 mx.ok.test.
"""


@dataclass
class Lab:
    dns_port: int
    port: int
    cafile: str

    def probe(self, *extra: str) -> list[str]:
        return [
            "probe",
            *("--nameserver", f"127.0.0.1:{self.dns_port}", "--port", str(self.port)),
            *("--timeout", "1", "--helo", "probe.example"),
            *extra,
        ]


async def _mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)  # connected, never greets


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ca = trustme.CA()
    cafile = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.ok.test").configure_cert(sctx)
    lt = LoopThread()
    dns = ZoneDNS(ZONE, Behaviour(servfail={"broken.test."}))
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        unknown = "550 5.1.1 <nobody@ok.test>: Recipient address rejected: User unknown"
        ok = lt.run(
            start_smtp(
                Scripted(rcpt={"nobody": unknown}),
                host="127.0.0.2",
                tls_context=sctx,
                hostname="mx.ok.test",
            )
        )
        servers.append(ok)
        port = port_of(ok)
        grey = "450 4.2.0 Recipient address rejected: Greylisted, see http://grey.test/"
        servers.append(lt.run(start_smtp(Scripted(rcpt={"": grey}), host="127.0.0.3", port=port)))
        servers.append(lt.run(start_raw(_mute, host="127.0.0.4", port=port)))
        with socket.socket() as s:  # nothing listens on 127.0.0.6 at that port: refused
            s.bind(("127.0.0.6", port))
        yield Lab(dns_port, port, str(cafile))
    finally:
        for srv in servers:
            lt.loop.call_soon_threadsafe(srv.close)
        lt.run(dns.stop())
        lt.close()


def run(*args: str, input: str | None = None) -> str:
    r = CliRunner().invoke(cli, list(args), input=input, env={"NO_COLOR": "1", "LANG": "C"})
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.output


# English that a translated output must not hold: common words of the sentences this tool
# writes. Server text (quoted replies and sent commands), option names and ids are removed
# first; what remains is ours.
# Lower case only (German nouns such as "Server" are capitalised), plus capitalised words
# that start an English sentence and are no German word.
ENGLISH = re.compile(
    r"\b(the|was|were|not|no|is|are|of|and|with|within|reply|replies|server|servers|"
    r"connection|could|does|every|session|failed|refused|accepted|retry|retrying|"
    r"records|errors|done|summary|exit|unknown|certificate|trusted|nobody|asked|"
    r"The|No|Not|Every|Connecting|Summary|Retry|Fix)\b"
)
# Quoted replies and sent commands, and a reply quoted inside our sentence (an expectation's
# detail): from its code to the end of the line or the closing parenthesis.
QUOTED = re.compile(r"^\s*(?:<[-~]\*?|[-~]>|\$ ).*$|\b[2-5]\d\d[ -][^)\n]*", re.MULTILINE)
IDENTIFIERS = re.compile(
    r"\S+@\S+|--[a-z-]+|\b[A-Za-z]+-[a-z-]+\b|\b[a-z]+(?:_[a-z]+)+\b|\b\w+\.test\b|\[SSL: [^\]]*\]"
)


def english_in(text: str) -> list[str]:
    text = IDENTIFIERS.sub(" ", QUOTED.sub("", text))
    return sorted({m.group(0) for m in ENGLISH.finditer(text)})


def _matrix(lab: Lab) -> dict[str, list[str]]:
    cafile = ("--cafile", lab.cafile)
    return {
        "accepted": lab.probe("alice@ok.test", *cafile, "--expect", "starttls"),
        "unknown user": lab.probe("nobody@ok.test", *cafile, "--expect", "rcpt=2xx"),
        "greylisted": lab.probe("carol@grey.test"),
        "untrusted TLS": lab.probe("alice@ok.test", "--expect", "tls-trusted"),
        "no greeting": lab.probe("dave@mute.test"),
        "refused": lab.probe("erin@closed.test"),
        "DNS failure": lab.probe("frank@broken.test"),
        "no domain": lab.probe("gina@nowhere.test"),
        "mx": ["mx", "ok.test", "--nameserver", f"127.0.0.1:{lab.dns_port}", "--no-connect"],
        "mx connect": [
            *("mx", "ok.test", "--nameserver", f"127.0.0.1:{lab.dns_port}"),
            *("--port", str(lab.port), "--timeout", "1"),
        ],
        "mx silent": [
            *("mx", "mute.test", "--nameserver", f"127.0.0.1:{lab.dns_port}"),
            *("--port", str(lab.port), "--timeout", "1"),
        ],
        "explain": ["explain", "550 5.1.1", "421 4.7.0", "252"],
        "codes": ["codes", "--class", "4"],
        "compare": ["compare", "421", "521"],
    }


@pytest.mark.parametrize("lang", FOREIGN)
def test_no_english_sentence_in_the_users_language(lab: Lab, lang: str) -> None:
    found = {}
    for name, args in _matrix(lab).items():
        out = run(*args, "--lang", lang)
        assert out.strip(), name
        words = english_in(out)
        if words:
            found[name] = (words, out[-1500:])
    assert not found, found


def test_the_check_finds_english(lab: Lab) -> None:
    """The same commands in English trip the check: it would notice an untranslated one."""
    for name in ("no greeting", "refused", "DNS failure", "untrusted TLS"):
        assert english_in(run(*_matrix(lab)[name], "--lang", "en")), name


@pytest.mark.parametrize("lang", FOREIGN)
def test_batch_and_demo_speak_the_language(lab: Lab, lang: str) -> None:
    targets = "alice@ok.test\nnobody@ok.test\ncarol@grey.test\n"
    args = ["batch", "-", "--nameserver", f"127.0.0.1:{lab.dns_port}", "--port", str(lab.port)]
    r = CliRunner().invoke(
        cli, [*args, "--timeout", "1", "--lang", lang], input=targets, env={"LANG": "C"}
    )
    summary = r.stderr.strip().splitlines()[-1]
    assert "smtp-probe" in summary and not english_in(summary), summary
    records = [json.loads(line) for line in r.stdout.splitlines()]
    # The records stay language-neutral: English text, with the id and parameters beside it.
    reasons = {rec["reason"]: rec["reason_message"]["id"] for rec in records}
    assert reasons["mx.ok.test [127.0.0.2] accepted the session"] == "verdict.accepted"
    demo = run("demo", "--lang", lang)
    assert not english_in(demo), demo


# --- columns by display width --------------------------------------------------------------


def _starts(line: str) -> list[int]:
    """The display columns where each column of a table row starts (columns are separated by
    two or more spaces)."""
    return [width(line[: m.start()]) for m in re.finditer(r"(?:^|(?<=\s\s))\S", line)]


def _label_block(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  ")]


@pytest.mark.parametrize("lang", ["en", "zh", "ko"])
def test_explain_labels_and_wrapped_values_line_up(lang: str) -> None:
    lines = _label_block(run("explain", "550 5.1.1", "--lang", lang))
    assert len(lines) >= 8
    value_at = {_starts(line)[1] for line in lines if not line.startswith("    ")}
    assert len(value_at) == 1, lines
    (col,) = value_at
    for line in lines:
        assert width(line) <= 100, line  # wrapped by display width
        if line.startswith(" " * col):  # a wrapped value continues under itself
            assert _starts(line)[0] == col, line
    assert any(line.startswith(" " * col) for line in lines), "a long value wraps"


@pytest.mark.parametrize("lang", ["en", "zh", "ko"])
def test_codes_and_summary_tables_line_up(lang: str) -> None:
    rows = run("codes", "--class", "4", "--lang", lang).splitlines()
    assert {tuple(_starts(r)[:3]) for r in rows if r.strip()} == {(0, 5, 19)}, rows[:5]
    log = "550 5.1.1 User unknown\n421 4.7.0 Try later\n"
    summary = run("explain", "--summary", "-", "--lang", lang, input=log).splitlines()
    head = summary[1:4]
    assert len({_starts(r)[1] for r in head}) == 1, head


@pytest.mark.parametrize("lang", ["zh", "ko", "de"])
def test_the_demo_summary_lines_up(lang: str) -> None:
    out = run("demo", "--lang", lang).splitlines()
    rows = out[-5:]  # the summary table: target, verdict, exit status
    assert len({tuple(_starts(r)) for r in rows}) == 1, rows


def test_wrapping_counts_cells() -> None:
    text = "该域接收邮件，但 @ 之前的部分在那里没有对应的邮箱：用户不存在。" * 4
    lines = wrap_cells(text, 30)
    assert all(width(line) <= 30 for line in lines), lines
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert not any(line[0] in "，。：" for line in lines)
    korean = "도메인은 메일을 받지만 @ 앞 부분에 해당하는 메일함이 없습니다. " * 3
    assert all(width(line) <= 30 for line in wrap_cells(korean, 30))
    assert " ".join(wrap_cells(korean, 30)) == korean.strip()
