"""`smtp-probe demo`: the main job offline, against servers started on loopback for it."""

from __future__ import annotations

import click

from probe import aio, exitcodes
from probe.catalog import locale
from probe.cli.common import echo, lang_option, resolve_lang, stdout_styler
from probe.cli.helptext import Command
from probe.demo import run_demo
from probe.messages import msg, say
from probe.render import pad
from probe.render import probe as probe_render
from probe.verdict import exit_status


@click.command(cls=Command)
@lang_option
def demo(lang: str | None) -> None:
    """Probe mail servers started on 127.0.0.1 just for this: no network needed."""
    loc = locale(resolve_lang(lang))
    style = stdout_styler()
    results = aio.run(run_demo())
    ok = True
    for n, (sc, cmd, result) in enumerate(results, 1):
        echo(style(f"## {n}. {say(loc, sc.title)}", None, True))
        echo(f"$ {cmd}")
        echo(probe_render.to_text(result, loc, style))
        echo("")
        ok = ok and result.verdict is sc.expected
    echo(style(f"## {say(loc, msg('demo.summary'))}", None, True))
    for n, (sc, _cmd, result) in enumerate(results, 1):
        status = exit_status(result.verdict)
        verdict = loc.ui(f"verdict.{result.verdict.value}")
        exit_word = say(loc, msg("demo.exit", status=status))
        echo(f"  {n}. {sc.target:<24} {pad(verdict, 28)} {exit_word}")
    raise SystemExit(exitcodes.OK if ok else exitcodes.UNAVAILABLE)
