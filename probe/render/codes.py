"""Render the catalog itself (the `codes` command)."""

from __future__ import annotations

from probe.catalog import Catalog, Locale, Rule
from probe.render import CLASS_COLOURS, Styler, pad, plain


def rows(
    cat: Catalog, loc: Locale, kind: str, klass: int | None, category: str | None
) -> list[dict[str, object]]:
    """Catalog entries as plain dicts, filtered by kind, class and category."""
    out: list[dict[str, object]] = []
    if kind in ("basic", "all"):
        out += _basic_rows(cat, loc, klass, category)
    if kind in ("enhanced", "all"):
        out += _enhanced_rows(cat, loc, klass, category)
    if kind in ("rules", "all"):
        out += _rule_rows(cat, loc, klass, category)
    return out


def _basic_rows(
    cat: Catalog, loc: Locale, klass: int | None, category: str | None
) -> list[dict[str, object]]:
    return [
        {
            "kind": "basic",
            "code": str(code),
            "class": code // 100,
            "name": loc.field("basic", str(code), "name"),
            "standard": e.standard,
            "category": e.category,
            "retryable": e.retryable,
            "wait_seconds": e.wait,
            "actor": e.actor,
            "commands": list(e.commands),
            "description": loc.field("basic", str(code), "description"),
            "references": list(e.refs),
        }
        for code, e in sorted(cat.basic.items())
        if (klass is None or code // 100 == klass) and (category is None or e.category == category)
    ]


def _enhanced_rows(
    cat: Catalog, loc: Locale, klass: int | None, category: str | None
) -> list[dict[str, object]]:
    # Keys sort by number, so "1.10" comes after "1.9".
    by_number = sorted(cat.enhanced.items(), key=lambda kv: tuple(map(int, kv[0].split("."))))
    return [
        {
            "kind": "enhanced",
            "code": f"X.{key}",
            "classes": list(en.classes),
            "name": loc.field("enhanced", key, "title"),
            "category": en.category,
            "deprecated": en.deprecated,
            "associated": list(en.associated),
            "description": loc.field("enhanced", key, "description"),
            "references": list(en.refs),
        }
        for key, en in by_number
        if (klass is None or klass in en.classes) and (category is None or en.category == category)
    ]


def _rule_in_class(r: Rule, klass: int) -> bool:
    """Whether a rule can match replies of a class, by its classes, codes or enhanced codes."""
    return bool(
        (r.classes and klass in r.classes)
        or any(c // 100 == klass for c in r.codes)
        or any(e[0] in (str(klass), "X") for e in r.enhanced)
    )


def _rule_rows(
    cat: Catalog, loc: Locale, klass: int | None, category: str | None
) -> list[dict[str, object]]:
    return [
        {
            "kind": "rule",
            "code": r.id,
            "provider": r.provider,
            "codes": sorted(r.codes),
            "enhanced": list(r.enhanced),
            "name": loc.field("rules", r.id, "description"),
            "category": r.category,
            "retryable": r.retryable,
            "source": r.source,
        }
        for r in cat.rules
        if (klass is None or _rule_in_class(r, klass))
        and (category is None or r.category == category)
    ]


def to_text(items: list[dict[str, object]], style: Styler = plain) -> str:
    if not items:
        return ""
    code_w = max(len(str(i["code"])) for i in items) + 2
    cat_w = max(len(str(i["category"])) for i in items) + 2
    out = []
    for i in items:
        klass = i.get("class")
        colour = CLASS_COLOURS.get(klass) if isinstance(klass, int) else None
        name = str(i.get("name") or "")
        if i["kind"] == "rule":
            name = f"[{i['provider']}] {name.split('. ')[0]}"
        code = style(pad(str(i["code"]), code_w), colour, True)
        out.append(f"{code}{pad(str(i['category']), cat_w)}{name}")
    return "\n".join(out)
