"""Pure renderers: every output (text, JSON) is a function of the typed results."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from probe.catalog import Locale
from probe.model import Interpretation
from probe.text import human_wait, safe

CLASS_COLOURS = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}

Styler = Callable[[str, str | None, bool], str]


def plain(text: str, colour: str | None = None, bold: bool = False) -> str:
    return text


def width(s: str) -> int:
    """Terminal columns of `s` (wide East Asian characters take two)."""
    if s.isascii():  # no ASCII character is wide: no need for the Unicode database
        return len(s)
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def pad(s: str, cols: int) -> str:
    return s + " " * max(0, cols - width(s))


# Chinese and Japanese text has no spaces: a line may break before any of these characters
# (Korean is broken at its spaces, as English is).
_HAN = "\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60"
_CLOSING = frozenset("，。、；：！？）」』】》,.;:!?)")


def unspaced(ch: str) -> bool:
    """Whether `ch` is written without spaces around it (Chinese, Japanese, full-width
    punctuation): two lines ending and starting with such characters join with none."""
    # The ranges of _HAN, each three characters: first, "-", last.
    return any(first <= ch <= last for first, last in zip(_HAN[::3], _HAN[2::3], strict=True))


def wrap_cells(text: str, cols: int) -> list[str]:
    """`text` in lines of at most `cols` terminal columns (a wide character takes two),
    broken at spaces and between Chinese characters, never before closing punctuation."""
    if text.isascii() or max(text) < "\u1100":
        # Nothing wide and no Chinese below U+1100 (the section sign of an RFC reference
        # is not worth compiling the tokenizer for).
        return textwrap.wrap(text, cols, break_long_words=False, break_on_hyphens=False)
    import re

    out: list[str] = []
    line, used, space, last = "", 0, False, ""
    for token in re.findall(f"\\s+|[{_HAN}]|[^\\s{_HAN}]+", text):
        if token.isspace():
            space = bool(line)
            continue
        piece = " " + token if space else token
        cells = width(piece)
        if line and used + cells > cols:
            # Closing punctuation may not start a line: what it follows goes along with it
            # (a Chinese character, or a whole word: "STARTTLS，" is not cut in two).
            keep = len(last) if token[0] in _CLOSING and not space and len(line) > len(last) else 0
            out.append(line[: len(line) - keep].rstrip())
            line = line[len(line) - keep :] + token
            used = width(line)
        else:
            line, used = line + piece, used + cells
        space, last = False, token
    return [*out, line] if line else out


def fields(rows: list[tuple[str, str]], indent: int = 2, wrap: int = 100) -> list[str]:
    """Label/value rows aligned in two columns, values wrapped under themselves."""
    if not rows:
        return []
    label_w = max(width(label) for label, _ in rows) + 2
    out: list[str] = []
    for label, value in rows:
        lead = " " * indent + pad(label, label_w)
        avail = max(30, wrap - indent - label_w)
        chunks = wrap_cells(value, avail) or [""]
        out.append(lead + chunks[0])
        out.extend(" " * (indent + label_w) + c for c in chunks[1:])
    return out


def duration(loc: Locale, seconds: int) -> str:
    unit, n = human_wait(seconds)
    return loc.ui(f"duration.{unit}", n=n)


def retry_advice(i: Interpretation, loc: Locale) -> str:
    """The retry sentence plus who must act."""
    if i.reply_class in (2, 3):
        return loc.ui("retry.done")
    if i.retryable:
        head = (
            loc.ui("retry.yes_now")
            if i.wait <= 0
            else loc.ui("retry.yes", wait=duration(loc, i.wait))
        )
    else:
        head = loc.ui("retry.no")
    sep = "" if loc.lang == "zh" else " "  # Chinese sentences are not separated by spaces
    return f"{head}{sep}{loc.ui('retry.who', actor=loc.ui(f'actor.{i.actor}'))}"


def class_name(loc: Locale, klass: int) -> str:
    return loc.ui(f"class.{klass}")


def texts(i: Interpretation, loc: Locale) -> tuple[str, str, str]:
    """Description, when you see it, and fix: from the most specific entry that has each."""
    found: dict[str, str] = {}
    for section, key in i.text_keys:
        for name in ("description", "when", "fix"):
            if name not in found:
                value = loc.field(section, key, name)
                if value:
                    found[name] = value
    cat = loc.ui(f"category.{i.category}.description")
    when = found.get("when")
    if not when:
        # With no entry that says when a code is seen, the enhanced subject says where it
        # comes from. Looked up only then: the enhanced texts are a file of their own to read.
        enh = i.reply.enhanced
        when = (
            loc.enhanced_part("subject", str(enh.subject), "description")
            if enh is not None
            else loc.enhanced_part("class", str(i.reply_class), "description")
        ) or cat
    return (
        found.get("description") or f"{class_name(loc, i.reply_class)}: {cat}",
        when,
        found.get("fix") or retry_advice(i, loc),
    )


def flag_messages(i: Interpretation, loc: Locale) -> list[tuple[str, str]]:
    return [(f.id, loc.ui(f"flag.{f.id}", **f.kwargs())) for f in i.flags]


def reply_summary(i: Interpretation, limit: int = 200) -> str:
    """One display line for the reply, escaped: code, enhanced code, text."""
    r = i.reply
    parts = [str(r.code)] if r.code is not None else []
    if r.enhanced is not None:
        parts.append(str(r.enhanced))
    if r.text:
        parts.append(r.text)
    line = " ".join(parts)
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return safe(line)
