"""The last English sentences: usage errors (click's own among them), batch input notices,
the Nagios plugin's words and the exporter's refusals, said in the user's language; every
message id the code uses exists in every language with the parameters the code gives it."""

from __future__ import annotations

import ast
import json
import os
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.batchinput import Refused, input_lines
from probe.catalog import LANGUAGES, locale
from probe.cli import cli
from probe.messages import Message, say
from probe.serveconf import parse_config
from tests.conftest import valid
from tests.test_serve import Client, Lab, client, running_lab
from tests.test_words import FOREIGN, IDENTIFIERS, QUOTED
from tests.test_words import english_in as sentence_words

# Words of this tool's refusals that the check for English sentences (test_words) does not
# list; lower case, as German capitalises its nouns ("Option", "Argument", "Port").
REFUSAL_WORDS = re.compile(
    r"\b(option|such|missing|argument|arguments|invalid|value|must|than|file|directory|"
    r"command|mean|address|target|number|line|cannot|give|needs|contains|character|refusing|"
    r"recipients|outside|loopback|between|bad|see|help)\b"
)


def english_in(text: str) -> list[str]:
    """English words in `text`: those of test_words' check, and those of usage errors."""
    rest = IDENTIFIERS.sub(" ", QUOTED.sub("", text))
    return sorted(set(sentence_words(text)) | {m[0] for m in REFUSAL_WORDS.finditer(rest)})


PKG = Path(__file__).resolve().parent.parent / "probe"
PREFIX = "smtp-probe: error: "  # fixed in every language: scripts look for it
# Calls whose first argument is a message id, and the keyword arguments that are its
# parameters (the others are the call's own).
ID_CALLS = {"msg": set(), "refuse": set(), "TargetError": set()}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _uses() -> Iterator[tuple[str, str, set[str]]]:
    """(where, id, parameter names) of every call with a literal message id in the package."""
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else None
            first = node.args[0]
            if name not in ID_CALLS or not isinstance(first, ast.Constant):
                continue
            if not isinstance(first.value, str):
                continue
            if any(k.arg is None for k in node.keywords):
                continue  # parameters passed as **mapping: not known here
            params = {k.arg for k in node.keywords if k.arg} - ID_CALLS[name]
            yield f"{path.relative_to(PKG)}:{node.lineno}", first.value, params


USES = list(_uses())


def test_the_walk_sees_the_new_messages() -> None:
    ids = {i for _, i, _ in USES}
    for expected in ("usage.exclusive_46", "target.two_ats", "input.line_too_long", "nagios.days"):
        assert expected in ids
    assert len(USES) > 150


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_the_code_uses_exists_with_its_parameters(lang: str) -> None:
    loc = locale(lang)
    wrong = []
    for where, id, params in USES:
        template = loc.message(id)
        if template is None:
            wrong.append(f"{where}: {id} is missing")
        elif _fields(template) != params:
            wrong.append(f"{where}: {id} takes {sorted(_fields(template))}, given {sorted(params)}")
    assert not wrong, wrong


def _sample(template: str) -> dict[str, Any]:
    """A value for each parameter that its format spec takes (a number for `:g`)."""
    out: dict[str, Any] = {}
    for _, name, spec, _ in string.Formatter().parse(template):
        if name:
            out[name] = 1.5 if spec else f"<{len(out)}>"
    return out


@pytest.mark.parametrize("lang", FOREIGN)
def test_every_new_sentence_renders_and_is_translated(lang: str) -> None:
    english, theirs = locale("en"), locale(lang)
    same = []
    for _, id, _ in USES:
        if id.split(".")[0] not in ("usage", "target", "input", "config", "http", "nagios"):
            continue
        template = english.message(id) or ""
        params = _sample(template)
        mine = theirs.message(id)
        assert mine is not None, id
        said = mine.format(**params)  # no stray brace, no unknown field
        if said == template.format(**params) and english_in(said):
            same.append((id, said))
    assert not same, same


# --- usage errors in the language matrix ---------------------------------------------------


def refuse_in(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(
        cli, list(args), prog_name="smtp-probe", env={"LANG": "C", "LC_ALL": "", **(env or {})}
    )
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, r.stderr


CASES = {
    "unknown option": ("probe", "x.example", "--bogus"),
    "bad port": ("probe", "x.example", "--port", "99999"),
    "unknown command": ("prbe", "x.example"),
    "malformed address": ("probe", "a@b@c"),
    "missing file": ("batch", "/nonexistent/targets.txt"),
    "bad choice": ("codes", "--kind", "everything"),
    "missing argument": ("probe",),
    "extra argument": ("explain", "550", "--format", "json", "--class"),
    "two families": ("mx", "ok.test", "-4", "-6"),
    "bad expectation": ("probe", "x.example", "--expect", "nonsense"),
    "bad shard": ("batch", "-", "--shard", "9/2"),
    "no such cafile": ("probe", "x.example", "--cafile", "/nonexistent/ca.pem"),
}


@pytest.mark.parametrize("lang", FOREIGN)
@pytest.mark.parametrize("case", sorted(CASES))
def test_usage_errors_speak_the_language(lang: str, case: str) -> None:
    status, err = refuse_in(*CASES[case], "--lang", lang)
    assert status == 64, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(PREFIX), err
    assert english_in(err.removeprefix(PREFIX)) == [], err


def test_the_same_errors_in_english_are_as_before() -> None:
    """The English lines are the texts the tool printed before they became messages."""
    expected = {
        "unknown option": "No such option '--bogus'. Did you mean '--host'? "
        "(see 'smtp-probe probe --help')",
        "bad port": "Invalid value for '--port': '99999' is not a number from 1 to 65535 "
        "(see 'smtp-probe probe --help')",
        "unknown command": "no command 'prbe'; did you mean 'probe'? (see 'smtp-probe --help')",
        "malformed address": "target address 'a@b@c' has more than one @ (an @ in a local part "
        "must be quoted: \"a@b\"@example.org) (see 'smtp-probe probe --help')",
        "missing argument": "Missing argument 'TARGET'. (see 'smtp-probe probe --help')",
        "two families": "-4 and -6 exclude each other (see 'smtp-probe mx --help')",
    }
    for case, text in expected.items():
        status, err = refuse_in(*CASES[case])
        assert (status, err) == (64, PREFIX + text + "\n"), case
    for case in CASES:  # and every case trips the check for English
        assert english_in(refuse_in(*CASES[case])[1].removeprefix(PREFIX)), case


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        # --lang given after the option that fails: found among the arguments
        (("probe", "--bogus", "x.example", "--lang", "ko"), {}, "'--bogus' 옵션이 없습니다"),
        (("probe", "a@b@c", "--lang=zh"), {}, "含有多个 @"),
        # no --lang: the environment's language; --lang wins over it
        (("probe", "a@b@c"), {"LANG": "de_DE.UTF-8"}, "enthält mehr als ein @"),
        (("probe", "a@b@c", "--lang", "de"), {"LC_ALL": "ko_KR.UTF-8"}, "enthält mehr als ein @"),
        # a --lang that is no language: the environment's
        (("probe", "a@b@c", "--lang", "fr"), {"LC_ALL": "zh_CN.UTF-8"}, "'fr' 不是 en、zh"),
    ],
)
def test_the_language_of_an_error(args: tuple[str, ...], env: dict[str, str], said: str) -> None:
    status, err = refuse_in(*args, env=env)
    assert status == 64 and err.count("\n") == 1, err
    assert said in err, err


def test_the_console_script_refuses_in_the_environments_language() -> None:
    env = {**os.environ, "LANG": "zh_CN.UTF-8", "LC_ALL": "", "PYTHONPATH": str(PKG.parent)}
    p = subprocess.run(
        [sys.executable, "-m", "probe", "probe", "x.example", "--prot", "25"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 64 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(PREFIX) and "没有选项 '--prot'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# --- batch input ---------------------------------------------------------------------------


def test_refused_input_lines_carry_their_reason_as_a_message(tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_bytes(b"ok.test\n" + b"x" * 5000 + b"\n" + b"bad\xff.test\n")
    fd = os.open(f, os.O_RDONLY)
    try:
        refused = [item for item in input_lines(fd) if isinstance(item, Refused)]
    finally:
        os.close(fd)
    assert [r.detail for r in refused] == [
        "the line is longer than 4096 bytes",
        "the line is not UTF-8 (byte 4 of 9)",
    ]
    assert all(isinstance(r.detail, Message) for r in refused)
    for lang in FOREIGN:
        for r in refused:
            said = say(locale(lang), r.detail)
            assert said != r.detail and not english_in(said), said


@pytest.mark.parametrize("lang", FOREIGN)
def test_the_torn_line_notice_speaks_the_language(tmp_path: Path, lang: str) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"line": 1}\n{"line": 2')
    r = CliRunner().invoke(
        cli,
        ["batch", "-", "--output", str(out), "--lang", lang],
        input="# nothing to probe\n",
        env={"LANG": "C"},
    )
    notice = r.stderr.splitlines()[0]
    assert str(out) in notice and not english_in(notice.replace(str(out), "")), r.stderr
    assert out.read_text().startswith('{"line": 1}\n{"line": 2\n')


# --- the Nagios plugin and the exporter -----------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from running_lab(tmp_path_factory)


def check(lab: Lab, *args: str) -> tuple[int, list[str]]:
    base = ["check", "--nameserver", f"127.0.0.1:{lab.dns_port}", "--port", str(lab.port)]
    r = CliRunner().invoke(
        cli, [*base, "--timeout", "2", "--cafile", lab.cafile, *args], env={"LANG": "de_DE"}
    )
    return r.exit_code, r.output.rstrip("\n").split("\n")


def test_check_in_german_keeps_the_plugin_protocol(lab: Lab) -> None:
    status, lines = check(lab, "ok.test", "--warning-days", "1000000", "--lang", "de")
    assert status == 1, lines
    head, perf = lines[0].split(" | ")
    assert head.startswith("SMTP WARNING - mx.ok.test antwortete mit 220 in "), head
    assert "Zertifikatstage außerhalb von 1000000:" in head
    assert not english_in(head.removeprefix("SMTP WARNING - ")), head
    assert lines[1].startswith(f"\\_[OK] mx.ok.test [127.0.0.2]:{lab.port}: antwortete")
    assert "vertrauenswürdig" in lines[1] and not english_in(lines[1]), lines[1]
    # The perfdata is the same as in English, label for label.
    _, english = check(lab, "ok.test", "--warning-days", "1000000")
    assert english[0].startswith("SMTP WARNING - mx.ok.test answered 220 in ")  # the default
    labels = [p.split("=")[0] for p in perf.split()]
    assert labels == [p.split("=")[0] for p in english[0].split(" | ")[1].split()]
    assert ";1000000:;" in perf


def test_check_says_unknown_in_the_language(lab: Lab) -> None:
    for args in (["ok.test", "--warning-days", "abc"], ["ok.test", "--bogus"], ["a@b@c"]):
        status, lines = check(lab, *args, "--lang", "ko")
        assert status == 3 and len(lines) == 1, lines
        assert lines[0].startswith("SMTP UNKNOWN - "), lines
        assert not english_in(lines[0].removeprefix("SMTP UNKNOWN - ")), lines


async def test_the_exporters_refusals_speak_the_modules_language(lab: Lab) -> None:
    c: Client
    c, tc = await client(lab.config(private=False))
    try:
        cases = [
            ({"target": "count.test"}, 403),
            ({"target": "user@ok.test"}, 400),
            ({"target": "ok.test\r\nQUIT"}, 400),
        ]
        for params, code in cases:
            status, english = await c.get("/probe", **params)
            assert status == code and english_in(english), (params, english)
            status, german = await c.get("/probe", module="deutsch", **params)
            assert status == code and german.count("\n") == 1, (params, german)
            assert german != english and not english_in(german), (params, german)
        assert (await c.get("/probe", target="user@ok.test"))[1] == (
            "a target is a domain, a host or host:port; recipients go in the module\n"
        )
    finally:
        await tc.close()


def test_configuration_errors_are_messages() -> None:
    with pytest.raises(ValueError) as e:
        parse_config("[server]\nqueue = 0\n")
    assert str(e.value) == "line 2: queue must be between 1 and 100000"
    said = say(locale("de"), e.value.args[0])
    assert said == "Zeile 2: queue muss zwischen 1 und 100000 liegen"


def test_the_merge_summary_speaks_the_environments_language(tmp_path: Path) -> None:
    inputs = tmp_path / "targets.txt"
    inputs.write_text("a.test\nb.test\n")
    shard = tmp_path / "shard.jsonl"
    shard.write_text('{"line": 1}\n{"line": 1}\n')
    out = tmp_path / "all.jsonl"
    args = ["merge", str(inputs), str(shard), "--output", str(out)]
    english = CliRunner().invoke(cli, args, env={"LANG": "C"}).stderr
    assert english == (
        "smtp-probe: merged 1 of 2 input lines from 1 files; 1 lines missing: 2; "
        "1 lines recorded twice (first record kept): 1\n"
    )
    r = CliRunner().invoke(cli, args, env={"LANG": "de_DE.UTF-8"})
    assert r.exit_code == 65 and r.stderr.count("\n") == 1, r.stderr
    assert "1 von 2 Eingabezeilen" in r.stderr and not english_in(r.stderr), r.stderr


@pytest.mark.parametrize("lang", FOREIGN)
def test_refused_batch_lines_are_reported_in_the_language(tmp_path: Path, lang: str) -> None:
    """The records stay English with the id beside; a report says the refusal again."""
    inputs = tmp_path / "targets.txt"
    inputs.write_bytes(b"# only lines that cannot be probed\nbad\xff.test\na@b@c\n")
    r = CliRunner().invoke(cli, ["batch", str(inputs)], env={"LANG": "C"})
    records = [valid(json.loads(line)) for line in r.stdout.splitlines()]
    assert [rec["error"]["message"]["id"] for rec in records] == [
        "input.not_utf8",
        "target.two_ats",
    ]
    assert records[0]["error"]["detail"] == "the line is not UTF-8 (byte 4 of 9)"
    report = CliRunner().invoke(
        cli, ["batch", str(inputs), "--format", "github", "--lang", lang], env={"LANG": "C"}
    )
    lines = [line.split("::", 2)[2] for line in report.stdout.splitlines() if "::error" in line]
    assert len(lines) == 2 and not english_in("\n".join(lines)), lines
