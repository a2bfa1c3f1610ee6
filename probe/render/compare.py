"""Render two codes side by side."""

from __future__ import annotations

from probe.catalog import Locale
from probe.model import Interpretation
from probe.render import CLASS_COLOURS, Styler, fields, plain, retry_advice, texts
from probe.render.explain import to_json as item_json


def _label(i: Interpretation, enhanced_style: bool) -> str:
    return f"{i.reply_class}.X.X" if enhanced_style else f"{i.reply_class}xx"


def _class_title(i: Interpretation, loc: Locale, enhanced_style: bool) -> str:
    if enhanced_style:
        return loc.enhanced_part("class", str(i.reply_class), "title")
    return loc.ui(f"class.{i.reply_class}")


def _name(i: Interpretation) -> str:
    r = i.reply
    return str(r.code) if r.code is not None else str(r.enhanced)


def differences(a: Interpretation, b: Interpretation, loc: Locale) -> list[str]:
    """Key differences, opening with the class sentence."""
    enh = a.reply.code is None and b.reply.code is None
    na, nb = _name(a), _name(b)
    out: list[str] = []
    if a.reply_class == b.reply_class:
        out.append(
            loc.ui(
                "compare.same_class",
                a=na,
                b=nb,
                label=_label(a, enh),
                class_name=_class_title(a, loc, enh),
            )
        )
    else:
        out.append(
            loc.ui(
                "compare.diff_class",
                a=na,
                b=nb,
                label_a=_label(a, enh),
                class_name_a=_class_title(a, loc, enh),
                label_b=_label(b, enh),
                class_name_b=_class_title(b, loc, enh),
            )
        )
    cat_a = loc.ui(f"category.{a.category}.title")
    cat_b = loc.ui(f"category.{b.category}.title")
    if a.category == b.category:
        out.append(loc.ui("compare.same_category", category=cat_a))
    else:
        out.append(loc.ui("compare.diff_category", a=na, b=nb, category_a=cat_a, category_b=cat_b))
    if a.retryable and b.retryable:
        out.append(loc.ui("compare.retry_both"))
    elif not a.retryable and not b.retryable:
        if a.reply_class >= 4 or b.reply_class >= 4:
            out.append(loc.ui("compare.retry_neither"))
    else:
        yes, no = (na, nb) if a.retryable else (nb, na)
        out.append(loc.ui("compare.retry_one", yes=yes, no=no))
    actor_a, actor_b = loc.ui(f"actor.{a.actor}"), loc.ui(f"actor.{b.actor}")
    if a.actor == b.actor:
        out.append(loc.ui("compare.actor_same", actor=actor_a))
    else:
        out.append(loc.ui("compare.actor_diff", a=na, b=nb, actor_a=actor_a, actor_b=actor_b))
    return out


def _title(i: Interpretation, loc: Locale) -> str:
    r = i.reply
    if r.code is not None:
        name = loc.field("basic", str(r.code), "name") if i.basic_known else None
    else:
        name = (
            loc.field("enhanced", r.enhanced.key, "title")
            if r.enhanced and i.enhanced_known
            else None
        )
    return f"{_name(i)} {name or loc.ui('message.unknown_code')}"


def to_text(a: Interpretation, b: Interpretation, loc: Locale, style: Styler = plain) -> str:
    out: list[str] = []
    for i in (a, b):
        description, when, fix = texts(i, loc)
        out.append(style(_title(i, loc), _colour(i), True))
        out.extend(
            fields(
                [
                    (
                        loc.ui("heading.class"),
                        f"{i.reply_class}xx {loc.ui(f'class.{i.reply_class}')}",
                    ),
                    (
                        loc.ui("heading.category"),
                        f"{i.category} ({loc.ui(f'category.{i.category}.title')})",
                    ),
                    (loc.ui("heading.description"), description),
                    (loc.ui("heading.when"), when),
                    (loc.ui("heading.fix"), fix),
                ]
            )
        )
        out.append("")
    out.append(style(loc.ui("heading.key_differences"), None, True))
    out.extend(fields([("-", d) for d in differences(a, b, loc)]))
    out.append("")
    out.append(style(loc.ui("heading.what_to_do"), None, True))
    out.extend(fields([(_name(i), retry_advice(i, loc)) for i in (a, b)]))
    return "\n".join(out)


def _colour(i: Interpretation) -> str | None:
    return CLASS_COLOURS.get(i.reply_class)


def to_json(a: Interpretation, b: Interpretation, loc: Locale) -> dict[str, object]:
    return {
        "schema": "smtp-probe/compare/2",
        "a": item_json(a, loc),
        "b": item_json(b, loc),
        "differences": differences(a, b, loc),
        "what_to_do": {_name(i): retry_advice(i, loc) for i in (a, b)},
    }
