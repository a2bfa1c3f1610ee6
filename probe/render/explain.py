"""Render interpretations (explain), summaries of a log, and their JSON forms."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from probe.catalog import Locale
from probe.model import Explained, Form, NotAReply
from probe.render import (
    CLASS_COLOURS,
    Styler,
    class_name,
    fields,
    flag_messages,
    plain,
    reply_summary,
    retry_advice,
    texts,
)
from probe.render.interp import interpretation_json
from probe.text import safe

SCHEMA = "smtp-probe/explain/2"


def to_json(e: Explained, loc: Locale) -> dict[str, object]:
    """One stable JSON object per input item (see README: JSON fields)."""
    if isinstance(e, NotAReply):
        return _not_a_reply_json(e, loc)
    r = e.reply
    return {
        "input": e.input,
        "found": True,
        "form": str(r.form),
        "code": r.code,
        "enhanced": str(r.enhanced) if r.enhanced else None,
        # Said only when true, so replies that carry their own status keep their old shape.
        **({"inferred": True} if r.form is Form.BOUNCE_TEXT else {}),
        "command": r.command,
        "text": r.text,
        "lines": list(r.lines),
        **interpretation_json(e, loc),
        **({"recipient": e.recipient} if e.recipient is not None else {}),
    }


def _not_a_reply_json(e: NotAReply, loc: Locale) -> dict[str, Any]:
    """The object for input in which no reply was found."""
    return {
        "input": e.input,
        "found": False,
        "code": None,
        "enhanced": None,
        "command": None,
        "class": None,
        "class_name": None,
        "category": None,
        "retryable": False,
        "description": loc.ui("message.not_a_reply"),
        "when": None,
        "fix": None,
        "rule": None,
    }


def to_text(e: Explained, loc: Locale, style: Styler = plain) -> str:
    """A readable block for one item; every piece of input text is escaped."""
    if isinstance(e, NotAReply):
        return f"{safe(_clip(e.input))}\n  {style(loc.ui('message.not_a_reply'), 'red', False)}"
    i = e
    r = i.reply
    colour = CLASS_COLOURS.get(i.reply_class)
    description, when, fix = texts(i, loc)
    rows: list[tuple[str, str]] = (
        [(loc.ui("heading.recipient"), safe(e.recipient))] if e.recipient else []
    )
    rows += [
        (loc.ui("heading.class"), f"{i.reply_class}xx {class_name(loc, i.reply_class)}"),
        (
            loc.ui("heading.category"),
            f"{i.category} ({loc.ui(f'category.{i.category}.title')})",
        ),
    ]
    if r.command:
        rows.append((loc.ui("heading.command"), r.command))
    if r.enhanced is not None:
        parts = [
            loc.enhanced_part("class", str(r.enhanced.klass), "title"),
            loc.enhanced_part("subject", str(r.enhanced.subject), "title"),
        ]
        if i.enhanced_known:
            parts.append(loc.field("enhanced", r.enhanced.key, "title") or "")
        rows.append(
            (loc.ui("heading.enhanced"), f"{r.enhanced}  " + " / ".join(p for p in parts if p))
        )
    rows += [
        (loc.ui("heading.description"), description),
        (loc.ui("heading.when"), when),
        (loc.ui("heading.fix"), fix),
        (loc.ui("heading.retry"), retry_advice(i, loc)),
    ]
    decided = i.rule.id
    if i.rule.provider:
        decided += f" ({i.rule.provider}; {i.rule.source})"
    else:
        decided += f" ({i.rule.source})"
    rows.append((loc.ui("heading.rule"), decided))
    rows.extend((loc.ui("heading.flags"), msg) for _, msg in flag_messages(i, loc))
    head = style(reply_summary(i), colour, True)
    return "\n".join([head, *fields(rows)])


def _clip(s: str, limit: int = 200) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


OTHER_CODES = "other"  # the bucket of codes past Summary.MAX_CODES distinct ones


@dataclass
class Summary:
    """Counts over a stream of items, with the first example of each bucket.

    At most MAX_CODES distinct codes are counted each on its own, the rest together: memory
    stays flat even for a log made to hold millions of different codes.
    """

    MAX_CODES = 1000

    lines: int = 0
    replies: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    examples_category: dict[str, str] = field(default_factory=dict)
    examples_code: dict[str, str] = field(default_factory=dict)

    def other(self) -> None:
        """A line without a reply."""
        self.lines += 1

    def add(self, e: Explained) -> None:
        self.lines += 1
        if isinstance(e, NotAReply):
            return
        self.replies += 1
        r = e.reply
        code = f"{r.code} {r.enhanced}" if r.code and r.enhanced else str(r.code or r.enhanced)
        if code not in self.by_code and len(self.by_code) >= self.MAX_CODES:
            code = OTHER_CODES
        self.by_category[e.category] += 1
        self.by_code[code] += 1
        self.examples_category.setdefault(e.category, e.input)
        self.examples_code.setdefault(code, e.input)


def summary_json(s: Summary, loc: Locale) -> dict[str, object]:
    return {
        "schema": "smtp-probe/explain-summary/1",
        "lines": s.lines,
        "replies": s.replies,
        "not_replies": s.lines - s.replies,
        "by_category": [
            {
                "category": c,
                "title": loc.ui(f"category.{c}.title"),
                "count": n,
                "example": s.examples_category[c],
            }
            for c, n in s.by_category.most_common()
        ],
        "by_code": [
            {"code": c, "count": n, "example": s.examples_code[c]}
            for c, n in s.by_code.most_common()
        ],
    }


def summary_text(s: Summary, loc: Locale, style: Styler = plain) -> str:
    out = [
        style(loc.ui("heading.summary"), None, True),
        *fields(
            [
                (loc.ui("heading.lines"), str(s.lines)),
                (loc.ui("heading.replies"), str(s.replies)),
                (loc.ui("heading.not_replies"), str(s.lines - s.replies)),
            ]
        ),
        "",
        style(loc.ui("heading.by_category"), None, True),
    ]
    for c, n in s.by_category.most_common():
        out.append(f"  {n:>8}  {c} ({loc.ui(f'category.{c}.title')})")
        out.append(
            f"            {loc.ui('heading.example')}: {safe(_clip(s.examples_category[c], 160))}"
        )
    out += ["", style(loc.ui("heading.by_code"), None, True)]
    for c, n in s.by_code.most_common():
        label = loc.ui("heading.other_codes", limit=s.MAX_CODES) if c == OTHER_CODES else c
        out.append(f"  {n:>8}  {label}")
        out.append(
            f"            {loc.ui('heading.example')}: {safe(_clip(s.examples_code[c], 160))}"
        )
    return "\n".join(out)
