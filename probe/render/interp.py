"""The one JSON form of an interpretation, shared by every command that prints replies
(`explain`, `probe`, `batch`, and `mx` where it shows replies)."""

from __future__ import annotations

from typing import Any

from probe.catalog import Locale
from probe.catalog.texts import locale
from probe.model import Interpretation
from probe.render import class_name, flag_messages, retry_advice, texts


def interpretation_json(i: Interpretation, loc: Locale) -> dict[str, Any]:
    """What a reply means: the fields `explain` items and `probe` replies share (schema
    `$defs/interpretation` in probe/schemas/common.json)."""
    description, when, fix = texts(i, loc)
    return {
        "class": i.reply_class,
        "class_name": class_name(loc, i.reply_class),
        "category": i.category,
        "category_title": loc.ui(f"category.{i.category}.title"),
        "retryable": i.retryable,
        "retry": {
            "retryable": i.retryable,
            "wait_seconds": i.wait,
            "actor": i.actor,
            "advice": retry_advice(i, loc),
        },
        "description": description,
        "when": when,
        "fix": fix,
        "rule": {
            "id": i.rule.id,
            "kind": i.rule.kind,
            "provider": i.rule.provider,
            "source": i.rule.source,
        },
        "basic": _basic_json(i, loc),
        "enhanced_detail": _enhanced_json(i, loc),
        "flags": flags_json(i),
        "references": list(i.refs),
    }


def flags_json(i: Interpretation) -> list[dict[str, Any]]:
    """Consistency flags, language-neutral: the id, its parameters and the English text."""
    english = flag_messages(i, locale("en"))
    return [
        {"id": f.id, "params": f.kwargs(), "message": msg}
        for f, (_, msg) in zip(i.flags, english, strict=True)
    ]


def _basic_json(i: Interpretation, loc: Locale) -> dict[str, Any] | None:
    code = i.reply.code
    if not i.basic_known or code is None:
        return None
    return {
        "code": code,
        "name": loc.field("basic", str(code), "name"),
        "standard": i.basic_standard,
    }


def _enhanced_json(i: Interpretation, loc: Locale) -> dict[str, Any] | None:
    enh = i.reply.enhanced
    if enh is None:
        return None
    return {
        "code": str(enh),
        "registered": i.enhanced_known,
        "class": {
            "code": enh.klass,
            "title": loc.enhanced_part("class", str(enh.klass), "title") or None,
        },
        "subject": {
            "code": enh.subject,
            "title": loc.enhanced_part("subject", str(enh.subject), "title") or None,
        },
        "title": loc.field("enhanced", enh.key, "title") if i.enhanced_known else None,
    }
