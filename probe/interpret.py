"""Turn a parsed reply into an interpretation: category, retry advice, and the rule that decided."""

from __future__ import annotations

from probe import catalog
from probe.model import Explained, Flag, Interpretation, NotAReply, Reply, RuleRef
from probe.reply import parse

# Suggested first waits when no entry says otherwise (RFC 5321 §4.5.4.1 favours >= 30 min;
# real MTAs start at 5-15 min).
_CLASS_WAIT = {4: 900}
_SOURCE_RFC = "RFC 5321 §4.2.1, §4.3.2"
_SOURCE_IANA = "IANA SMTP Enhanced Status Codes registry (RFC 5248)"


def interpret_reply(reply: Reply, input_text: str | None = None) -> Interpretation:
    """Interpret one reply, using its code, enhanced code, command and text together."""
    cat = catalog.load()
    klass = reply.reply_class
    enh = reply.enhanced
    enh_key = enh.key if enh else None
    enh_entry = cat.enhanced.get(enh_key) if enh_key else None
    basic = cat.basic.get(reply.code) if reply.code is not None else None
    flags: list[Flag] = []

    if reply.code is not None:
        if basic is None:
            flags.append(Flag("unknown_code", (("code", str(reply.code)),)))
        elif not basic.standard:
            flags.append(Flag("nonstandard", (("code", str(reply.code)),)))
    if reply.other_codes:
        codes = ", ".join(str(c) for c in (reply.code, *reply.other_codes))
        flags.append(Flag("mixed_codes", (("codes", codes),)))
    if enh is not None:
        if enh_entry is None:
            flags.append(Flag("unregistered", (("enhanced", str(enh)),)))
        else:
            if enh_entry.deprecated:
                flags.append(Flag("deprecated", (("enhanced", str(enh)),)))
            if reply.code is not None and enh.klass == klass:
                assoc = enh_entry.associates(reply.code)
                if assoc is False:
                    flags.append(
                        Flag("not_associated", (("code", str(reply.code)), ("enhanced", str(enh))))
                    )
        if reply.code is not None and enh.klass != klass:
            flags.append(
                Flag(
                    "class_mismatch",
                    (("enhanced_class", str(enh.klass)), ("basic_class", str(klass))),
                )
            )

    text = reply.text
    lowered = text.lower()
    enh_str = str(enh) if enh else None
    # Provider and MTA rules explain refusals; a 2xx or 3xx reply needs none (and is most of a
    # live session, so skipping them keeps the probe close to a bare client's speed).
    for rule in cat.candidates(lowered) if klass >= 4 else ():
        if rule.matches(reply.code, klass, enh_str, reply.command, text, lowered):
            retryable = rule.retryable if rule.retryable is not None else klass == 4
            return Interpretation(
                input=input_text if input_text is not None else text,
                reply=reply,
                reply_class=klass,
                category=rule.category,
                retryable=retryable,
                wait=rule.wait if retryable else 0,
                actor=rule.actor,
                rule=RuleRef(rule.id, rule.source, rule.provider, "rule"),
                basic_known=basic is not None,
                basic_standard=bool(basic and basic.standard),
                enhanced_known=enh_entry is not None,
                flags=tuple(flags),
                refs=_refs(basic, enh_entry),
            )

    if klass in (2, 3):
        category = "success"
    elif enh_entry is not None and enh is not None and enh_entry.category != "other":
        category = enh_entry.category
    elif basic is not None:
        category = basic.category
    elif enh_entry is not None:
        category = enh_entry.category
    else:
        category = "other"

    # The basic code decides the protocol action (RFC 3463 §2); enhanced-only input uses its class.
    if basic is not None:
        retryable, wait, actor = basic.retryable, basic.wait, basic.actor
    else:
        retryable = klass == 4
        wait = _CLASS_WAIT.get(klass, 0) if retryable else 0
        actor = "nobody" if klass in (2, 3, 4) else "sender"

    if enh_entry is not None and enh is not None and (basic is None or category != basic.category):
        ref = RuleRef(f"enhanced:{enh}", _SOURCE_IANA, None, "enhanced")
    elif basic is not None and reply.code is not None:
        ref = RuleRef(f"basic:{reply.code}", "; ".join(basic.refs), None, "basic")
    else:
        ref = RuleRef(f"class:{klass}", _SOURCE_RFC, None, "class")
    return Interpretation(
        input=input_text if input_text is not None else text,
        reply=reply,
        reply_class=klass,
        category=category,
        retryable=retryable,
        wait=wait if retryable else 0,
        actor=actor,
        rule=ref,
        basic_known=basic is not None,
        basic_standard=bool(basic and basic.standard),
        enhanced_known=enh_entry is not None,
        flags=tuple(flags),
        refs=_refs(basic, enh_entry),
    )


def _refs(basic: catalog.BasicEntry | None, enh: catalog.EnhancedEntry | None) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for r in (basic.refs if basic else ()) + (enh.refs if enh else ()):
        seen.setdefault(r, None)
    return tuple(seen)


def explain(item: str) -> Explained:
    """Parse and interpret one input item; input without a reply gives `NotAReply`."""
    reply = parse(item)
    if reply is None:
        return NotAReply(item)
    return interpret_reply(reply, item)
