"""Turn a parsed reply into an interpretation: category, retry advice, and the rule that decided."""

from __future__ import annotations

from typing import NamedTuple

from probe import catalog
from probe.cache import Bounded
from probe.model import Explained, Flag, Interpretation, NotAReply, Reply, RuleRef

# Suggested first waits when no entry says otherwise (RFC 5321 §4.5.4.1 favours >= 30 min;
# real MTAs start at 5-15 min).
_CLASS_WAIT = {4: 900}
_SOURCE_RFC = "RFC 5321 §4.2.1, §4.3.2"
_SOURCE_IANA = "IANA SMTP Enhanced Status Codes registry (RFC 5248)"


class _Decision(NamedTuple):
    """What an interpretation says to do, and which rule said it."""

    category: str
    retryable: bool
    wait: int
    actor: str
    rule: RuleRef


def interpret_reply(reply: Reply, input_text: str | None = None) -> Interpretation:
    """Interpret one reply, using its code, enhanced code, command and text together."""
    cat = catalog.load()
    enh_entry = cat.enhanced.get(reply.enhanced.key) if reply.enhanced else None
    basic = cat.basic.get(reply.code) if reply.code is not None else None
    decision = _rule_decision(cat, reply) or _catalog_decision(reply, basic, enh_entry)
    return Interpretation(
        input=input_text if input_text is not None else reply.text,
        reply=reply,
        reply_class=reply.reply_class,
        category=decision.category,
        retryable=decision.retryable,
        wait=decision.wait if decision.retryable else 0,
        actor=decision.actor,
        rule=decision.rule,
        basic_known=basic is not None,
        basic_standard=bool(basic and basic.standard),
        enhanced_known=enh_entry is not None,
        flags=_code_flags(reply, basic) + _enhanced_flags(reply, enh_entry),
        refs=_refs(basic, enh_entry),
    )


def _code_flags(reply: Reply, basic: catalog.BasicEntry | None) -> tuple[Flag, ...]:
    flags: list[Flag] = []
    if reply.code is not None:
        if basic is None:
            flags.append(Flag("unknown_code", (("code", str(reply.code)),)))
        elif not basic.standard:
            flags.append(Flag("nonstandard", (("code", str(reply.code)),)))
    if reply.other_codes:
        codes = ", ".join(str(c) for c in (reply.code, *reply.other_codes))
        flags.append(Flag("mixed_codes", (("codes", codes),)))
    return tuple(flags)


def _enhanced_flags(reply: Reply, entry: catalog.EnhancedEntry | None) -> tuple[Flag, ...]:
    enh, code, klass = reply.enhanced, reply.code, reply.reply_class
    if enh is None:
        return ()
    flags: list[Flag] = []
    if entry is None:
        flags.append(Flag("unregistered", (("enhanced", str(enh)),)))
    else:
        if entry.deprecated:
            flags.append(Flag("deprecated", (("enhanced", str(enh)),)))
        # Association with the basic code means nothing when the classes already disagree.
        if code is not None and enh.klass == klass and entry.associates(code) is False:
            flags.append(Flag("not_associated", (("code", str(code)), ("enhanced", str(enh)))))
    if code is not None and enh.klass != klass:
        params = (("enhanced_class", str(enh.klass)), ("basic_class", str(klass)))
        flags.append(Flag("class_mismatch", params))
    return tuple(flags)


def _rule_decision(cat: catalog.Catalog, reply: Reply) -> _Decision | None:
    """The first provider or MTA rule that matches the reply, if any."""
    klass = reply.reply_class
    # Provider and MTA rules explain refusals; a 2xx or 3xx reply needs none (and is most of a
    # live session, so skipping them keeps the probe close to a bare client's speed).
    if klass < 4:
        return None
    # Provider texts are short and come first; past this a long reply is not read (and no
    # rule, however it is written, can take more than linear time over this much).
    text = reply.text[: catalog.MATCH_LIMIT]
    if not text:
        # Every rule reads the text (the catalog's tests hold each pattern to need a
        # character): a bare code is decided by the registries, without compiling a pattern.
        return None
    lowered = text.lower()
    enh_str = str(reply.enhanced) if reply.enhanced else None
    for rule in cat.candidates(lowered):
        if rule.matches(reply.code, klass, enh_str, reply.command, text, lowered):
            retryable = rule.retryable if rule.retryable is not None else klass == 4
            ref = RuleRef(rule.id, rule.source, rule.provider, "rule")
            return _Decision(rule.category, retryable, rule.wait, rule.actor, ref)
    return None


def _catalog_decision(
    reply: Reply, basic: catalog.BasicEntry | None, enh_entry: catalog.EnhancedEntry | None
) -> _Decision:
    """No rule matched: the registries of basic and enhanced codes decide."""
    klass = reply.reply_class
    if klass in (2, 3):
        category = "success"
    elif enh_entry is not None and enh_entry.category != "other":
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
        wait = _CLASS_WAIT.get(klass, 0)
        actor = "nobody" if klass in (2, 3, 4) else "sender"

    if enh_entry is not None and (basic is None or category != basic.category):
        ref = RuleRef(f"enhanced:{reply.enhanced}", _SOURCE_IANA, None, "enhanced")
    elif basic is not None:
        ref = RuleRef(f"basic:{reply.code}", "; ".join(basic.refs), None, "basic")
    else:
        ref = RuleRef(f"class:{klass}", _SOURCE_RFC, None, "class")
    return _Decision(category, retryable, wait, actor, ref)


def _refs(basic: catalog.BasicEntry | None, enh: catalog.EnhancedEntry | None) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for r in (basic.refs if basic else ()) + (enh.refs if enh else ()):
        seen.setdefault(r, None)
    return tuple(seen)


class Interpreter:
    """Interprets the replies of one run (a log being explained), each distinct reply once.

    A log repeats itself: every delivery's "250 2.0.0 Ok", the same refusal for address after
    address. What decides an interpretation is the codes and, for a refusal, the command and
    text (rules are tried on 4xx and 5xx replies only); replies alike in those share one.
    Bounded, and owned by its run: two runs share nothing.
    """

    LONG = 1024  # a longer text is rarely seen twice; keeping it would only cost memory

    def __init__(self, size: int = 4096) -> None:
        self._seen: Bounded[tuple[object, ...], Interpretation] = Bounded(size)

    def __call__(self, reply: Reply, input_text: str) -> Interpretation:
        if len(reply.text) > self.LONG:
            return interpret_reply(reply, input_text)
        key: tuple[object, ...] = (reply.code, reply.enhanced, reply.other_codes)
        if reply.reply_class >= 4:
            key += (reply.command, reply.text)
        found = self._seen.get(key)
        if found is None:
            found = interpret_reply(reply, input_text)
            self._seen.put(key, found)
            return found
        return Interpretation(input_text, reply, *found[2:])


def explain(item: str) -> Explained:
    """Parse and interpret one input item; input without a reply gives `NotAReply`."""
    # Here, not at the top: a live probe interprets replies it parsed itself, and the
    # pasted-text parser's patterns cost it 4 ms of start-up.
    from probe.pasted import parse_pasted

    reply = parse_pasted(item)
    if reply is None:
        return NotAReply(item)
    return interpret_reply(reply, item)
