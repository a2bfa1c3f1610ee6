"""`--help` in the user's language: every command's page in zh, de and ko holds no English
sentence and fits the terminal by display width; the English texts of the catalog are the
code's own; the wrapping keeps every word and breaks CJK text where it may."""

from __future__ import annotations

import importlib
import inspect
import re

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from probe.catalog import locale
from probe.cli import COMMANDS, cli
from probe.cli.helppage import _paragraphs, translations
from probe.render import width, wrap_cells
from tests.test_usage_words import english_in
from tests.test_words import FOREIGN

PAGES = ["", *COMMANDS]  # "" is the group's own page
URL = re.compile(r"\S*/\S*\?\S*")  # the exporter's /probe?target=... is no sentence


def _command(name: str) -> click.Command:
    if not name:
        return cli
    module, attr, _ = COMMANDS[name]
    found = getattr(importlib.import_module(module), attr)
    assert isinstance(found, click.Command)
    return found


def _hidden(cmd: click.Command, opt: str) -> bool:
    return any(isinstance(p, click.Option) and p.hidden and opt in p.opts for p in cmd.params)


def _help(name: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    args = [name, "--help", *extra] if name else ["--help", *extra]
    env = {"LANG": "C", "LC_ALL": "", **(env or {})}
    r = CliRunner().invoke(cli, args, prog_name="smtp-probe", env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, r.output


def test_the_english_texts_are_the_code_s() -> None:
    """en/help.toml says what the code says: the group, each command, each option."""
    en = locale("en").section("help")
    assert en["group"]["help"] == inspect.cleandoc(cli.help or "")
    used: set[str] = set()
    for name, (_, _, short) in COMMANDS.items():
        cmd = _command(name)
        assert en["command"][name] == {"short": short, "help": inspect.cleandoc(cmd.help or "")}
        own = en.get("option_for", {}).get(name, {})
        bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert [o for o in bare if not _hidden(cmd, o)] == [], (name, bare)  # each one says
        for p in cmd.params:
            if isinstance(p, click.Option) and p.help and p.name:
                key = f"option_for.{name}.{p.name}" if p.name in own else f"option.{p.name}"
                assert (own if p.name in own else en["option"]).get(p.name) == p.help, key
                used.add(key)
    listed = {f"option.{n}" for n in en["option"]}
    listed |= {
        f"option_for.{c}.{n}" for c, texts in en.get("option_for", {}).items() for n in texts
    }
    assert listed == used, listed ^ used  # no text for an option the code no longer has


@pytest.mark.parametrize("lang", FOREIGN)
@pytest.mark.parametrize("page", PAGES)
def test_every_help_page_speaks_the_language(lang: str, page: str) -> None:
    # A command without --lang (the group, merge) follows the environment, as its errors do.
    if any(p.name == "lang" for p in _command(page).params):
        status, out = _help(page, "--lang", lang)
    else:
        status, out = _help(page, env={"LANG": f"{lang}_XX.UTF-8"})
    assert status == 0, out
    words = translations(lang)[1]
    assert out.startswith(words["usage"]) and "smtp-probe" in out.split("\n")[0], out
    assert re.search(f"\n{words['options']}[:：]\n", out), out
    assert english_in(URL.sub(" ", out)) == [], out
    # (the group's examples are lines kept as written, as wide in English)
    too_wide = [line for line in out.splitlines() if width(line) > 80 and "smtp-probe " not in line]
    assert not too_wide, too_wide


@pytest.mark.parametrize("lang", FOREIGN)
def test_every_text_is_translated(lang: str) -> None:
    said, words = translations(lang)
    same = [en for en, there in said.items() if there == en and len(en) > 12]
    assert same == []
    assert all(words.values())


def test_the_language_comes_from_lang_or_the_environment() -> None:
    de = translations("de")[1]["usage"]
    assert _help("probe", env={"LANG": "de_DE.UTF-8"})[1].startswith(de)
    assert _help("probe", "--lang", "de", env={"LC_ALL": "ko_KR.UTF-8"})[1].startswith(de)
    # English stays click's own page, word for word.
    english = _help("probe")[1]
    assert english.startswith("Usage: smtp-probe probe [OPTIONS] TARGET")
    assert "Show this message and exit." in english


def test_defaults_and_choices_keep_their_values() -> None:
    assert f"[{translations('de')[1]['default']}: 20;" in _help("batch", "--lang", "de")[1]
    words = translations("zh")[1]
    out = _help("batch", "--lang", "zh")[1]
    assert f"[{words['default']}：20;" in out.replace("\n", " ")  # --concurrency
    choices = re.compile(r"\[[a-z0-9-]+(?:\|[a-z0-9-]+)+\]")
    assert set(choices.findall(out)) == set(choices.findall(_help("batch")[1])) != set()


# --- wrapping by display width (probe.render's, shared with the text renderers) -----------------

TEXT = st.lists(
    st.sampled_from([*"abc de，。（）、中文字 한국어 MX-1 [x] ", "STARTTLS", "证书", "인증서"]),
    max_size=60,
).map("".join)


@given(TEXT, st.integers(min_value=4, max_value=60))
def test_wrap_keeps_every_character_and_fits(text: str, cols: int) -> None:
    lines = wrap_cells(text.strip(), cols)  # (a paragraph of help comes stripped)
    assert "".join("".join(lines).split()) == "".join(text.split())
    for line in lines:
        if width(line) > cols:  # only a unit that cannot break: no space inside
            assert " " not in line, (line, cols)
        assert line == line.strip()
    # No word of Latin letters is cut, not even by the punctuation rule ("STARTTLS，").
    for word in re.findall(r"[^\s\u2e80-\u9fff\uff00-\uff60]+", text):
        assert any(word in line for line in lines), (word, lines)


def test_chinese_lines_join_without_a_space() -> None:
    zh = "第一行\n第二行，再接 MX\nhost"
    assert _paragraphs(zh) == ["第一行第二行，再接 MX host"]
    assert _paragraphs("Zeile eins\nZeile zwei\n\n\bA  B\nC") == [
        "Zeile eins Zeile zwei",
        "\b\nA  B\nC",
    ]


def test_a_terminal_that_cannot_show_the_language_gets_english() -> None:
    """LANG=zh_TW.Big5 reads as zh: a page Big5 cannot hold is said in English, not a
    traceback."""
    for charset, english in (("big5", True), ("latin-1", True), ("utf-8", False)):
        r = CliRunner(charset=charset).invoke(
            cli, ["probe", "--help", "--lang", "zh"], prog_name="smtp-probe"
        )
        assert r.exit_code == 0 and r.exception is None, r.output
        assert r.output.startswith("Usage:") is english, (charset, r.output[:40])


def test_a_command_invoked_on_its_own_finds_lang_after_help() -> None:
    from probe.cli.offline import explain

    r = CliRunner().invoke(explain, ["--help", "--lang", "de"], env={"LANG": "C", "LC_ALL": ""})
    assert r.exit_code == 0 and r.output.startswith(translations("de")[1]["usage"]), r.output
